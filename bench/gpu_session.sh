#!/usr/bin/env bash
# Issue 18's GPU session in one command (one H200, an offline image with a CUDA torch preinstalled):
#
#     bash bench/gpu_session.sh            # from the repository root; ~9 min in all
#
# Everything goes to $OUT (the device tool's output folder; default ./gpu_out): one log per step,
# summary.txt (one line per step: rc and seconds), env.txt, wkv_gpu.md, wkv7_gpu.md,
# train_check.md, wkv_gpu_rest.md. A failed or timed-out step is recorded and the next one runs.
# The whole session keeps to GPU_SESSION_BUDGET_S seconds (default 540, so that one 10-minute
# command holds it): each step has a cap and leaves a reserve for the steps after it; a step with
# under 15 s left is skipped. GPU_SESSION_STEPS="kernels train" reruns only those steps (on a
# machine that is still warm; a fresh one needs install too). Order (most important first):
#
#   install  pip: the carried wheels (.whl/), then this project       cap  90 s
#   env      nvidia-smi, nvcc, torch/CUDA versions, which modules import  cap  30 s
#   build    the WKV and WKV-7 kernels, every head size, in parallel     cap 200 s
#   kernels  (a) pytest -q -m gpu tests/kernels                          cap 150 s
#   wkv      (b) bench/wkv_gpu.py --seq 4096 16384 (B=8, D=4096, bf16)    cap 180 s
#   train    (c) bench/gpu_train_check.py: 6 steps of music/visual/audio, cap 180 s
#                CUDA bf16 vs CPU fp32
#   wkv7     (d) bench/wkv_gpu.py --op wkv7 --seq 4096 16384              cap 120 s
#   rest     bench/wkv_gpu.py --seq 1024 2048 8192 (the rest of §9's grid) what is left
#
# Afterwards (on the CPU machine): copy $OUT/wkv_gpu.md (+ the rows of wkv_gpu_rest.md) to
# bench/results/wkv_gpu.md and $OUT/wkv7_gpu.md to bench/results/wkv7_gpu.md, and commit them.
#
# The wheels: the device reaches no registry, so carry them in the git-ignored .whl/ folder (the
# run tool's `carry: [".whl"]`, 64 MiB at most). Check the device's Python first (a first, tiny
# device call: `python -V; pip list --format=freeze`, while the machine then stays warm), then
# fill the folder here, for that version (3.12 below), without dependencies (a dependency would
# pull a CPU torch): what a bare torch image lacks for steps a-d (fla-core, einops, ninja, pytest;
# what the three training runs import: see the module list at the end of train_check.md):
#
#   pip download --only-binary=:all: --no-deps --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
#       --platform manylinux_2_28_x86_64 -d .whl \
#       fla-core==0.6.0 einops ninja pytest pluggy iniconfig pyrwkv-tokenizer safetensors tqdm \
#       pyyaml matplotlib contourpy cycler fonttools kiwisolver pyparsing python-dateutil six \
#       open_clip_torch timm ftfy wcwidth regex huggingface_hub transformers tokenizers \
#       soundfile cffi pycparser pillow httpx httpcore h11 anyio sniffio idna certifi
#
# (huggingface_hub's own dependencies change between versions: the env step prints every module
# that does not import, with the error naming what it lacks; add that wheel for a rerun.)
# (peft, music21 and tensorboard are runtime dependencies too, but nothing here imports them:
# the training check logs to metrics.jsonl only and does not generate tunes.) Wheels of torch,
# torchvision, torchaudio, triton and nvidia-* in the folder are NOT installed (they would replace
# the image's CUDA build). The wheels are installed with their dependencies resolved from the
# folder and the image; when that fails (a dependency neither has), without dependencies.
set -u
cd "$(dirname "$0")/.." || exit 1

OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export OUT
PY=${PYTHON:-$(command -v python || command -v python3)}
export PY
export PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_BREAK_SYSTEM_PACKAGES=1 PYTHONUNBUFFERED=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1  # no registry, no hub: never wait on the network
BUDGET_S=${GPU_SESSION_BUDGET_S:-540}
DEADLINE=$(($(date +%s) + BUDGET_S))
STEPS=${GPU_SESSION_STEPS:-install env build kernels wkv train wkv7 rest}  # a rerun: a subset
SUMMARY=$OUT/summary.txt
: >"$SUMMARY"

if [ -z "${CUDA_HOME:-}" ]; then  # the toolkit root: bin/nvcc and include/cuda_runtime.h
    nvcc_root=$(dirname "$(dirname "$(command -v nvcc 2>/dev/null || echo /none/bin/nvcc)")")
    for c in /usr/local/cuda /usr/local/cuda-* /opt/cuda "$nvcc_root"; do
        if [ -x "$c/bin/nvcc" ] && [ -f "$c/include/cuda_runtime.h" ]; then
            export CUDA_HOME=$c
            break
        fi
    done
fi
[ -n "${CUDA_HOME:-}" ] && export PATH=$CUDA_HOME/bin:$PATH

# step NAME CAP RESERVE CMD...: run CMD under `timeout`, at most CAP seconds and never into the
# last RESERVE seconds of the budget; output in $OUT/NAME.log, a summary line, the log's tail.
step() {
    local name=$1 cap=$2 reserve=$3
    shift 3
    case " $STEPS " in *" $name "*) ;; *) return ;; esac
    local left=$((DEADLINE - $(date +%s) - reserve))
    local limit=$((cap < left ? cap : left))
    if [ "$limit" -lt 15 ]; then
        printf 'step %-8s skipped: no time left (%ss)\n' "$name" "$left" | tee -a "$SUMMARY"
        return
    fi
    echo "=== step $name (timeout ${limit}s): $*"
    local start=$(date +%s)
    timeout -k 10 "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    local note=""
    [ "$rc" = 124 ] || [ "$rc" = 137 ] && note=" (timed out)"
    tail -n 12 "$OUT/$name.log"
    printf 'step %-8s rc=%-3s %4ss%s\n' "$name" "$rc" "$(($(date +%s) - start))" "$note" | tee -a "$SUMMARY"
}

install_all() {
    local wheels=() w
    for w in .whl/*.whl; do
        [ -e "$w" ] || continue
        case $(basename "$w") in
            torch-* | torchvision-* | torchaudio-* | triton-* | nvidia_*) echo "not installing $w (the image's CUDA build stays)" ;;
            *) wheels+=("$w") ;;
        esac
    done
    echo "${#wheels[@]} wheels in .whl/"
    if [ "${#wheels[@]}" -gt 0 ]; then
        "$PY" -m pip install --no-index --find-links .whl "${wheels[@]}" || {
            echo "resolving the wheels' dependencies failed: installing them without dependencies"
            "$PY" -m pip install --no-index --no-deps "${wheels[@]}"
        }
    fi
    "$PY" -m pip install --no-index --no-deps --no-build-isolation -e .
}

report_env() {
    date -u
    nvidia-smi
    echo "CUDA_HOME=${CUDA_HOME:-unset: no CUDA toolkit found, the kernels cannot build}"
    command -v nvcc && nvcc --version | tail -n 2
    "$PY" - <<'EOF'
import importlib, platform, sys
import torch
print("python", platform.python_version(), sys.executable)
print("torch", torch.__version__, "CUDA", torch.version.cuda, "available", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
for name in ("numpy", "safetensors", "pyrwkv_tokenizer", "tqdm", "yaml", "matplotlib", "PIL", "torchvision",
             "torchaudio", "open_clip", "timm", "transformers", "soundfile", "ninja", "pytest", "einops", "fla",
             "peft", "music21", "tensorboard", "rwkv_mm"):
    try:
        module = importlib.import_module(name)
        print(f"  ok      {name} {getattr(module, '__version__', '')}")
    except Exception as err:
        print(f"  MISSING {name}: {type(err).__name__}: {err}")
EOF
}

build_kernels() {  # one process per extension, all at once (each compiles its 2 sources)
    local pids=() names=() op n i rc=0
    for n in 64 32 128; do
        for op in wkv wkv7; do
            local fn=build
            [ "$op" = wkv7 ] && fn=build7
            "$PY" -c "import time; t = time.time()
from rwkv_mm.kernels.${op}_cuda import $fn
$fn($n); print('$op n$n built in %.0f s' % (time.time() - t))" >"$OUT/build_${op}_n$n.log" 2>&1 &
            pids+=($!)
            names+=("$op n$n")
        done
    done
    for i in "${!pids[@]}"; do
        if wait "${pids[$i]}"; then
            tail -n 1 "$OUT/build_${names[$i]/ /_}.log"
        else
            rc=1
            echo "FAILED: ${names[$i]}"
            tail -n 5 "$OUT/build_${names[$i]/ /_}.log"
        fi
    done
    return $rc
}
export -f install_all report_env build_kernels

step install 90 0 bash -c install_all
step env 30 0 bash -c report_env
cp "$OUT/env.log" "$OUT/env.txt" 2>/dev/null
step build 200 330 bash -c build_kernels
step kernels 150 240 "$PY" -m pytest -q -m gpu -ra tests/kernels
step wkv 180 120 "$PY" bench/wkv_gpu.py --seq 4096 16384 --out "$OUT/wkv_gpu.md"
step train 180 0 "$PY" bench/gpu_train_check.py --device cuda --steps 6 --out "$OUT/train_check.md"
step wkv7 120 0 "$PY" bench/wkv_gpu.py --op wkv7 --seq 4096 16384 --out "$OUT/wkv7_gpu.md"
step rest 600 0 "$PY" bench/wkv_gpu.py --seq 1024 2048 8192 --out "$OUT/wkv_gpu_rest.md"

echo
echo "=== summary ($OUT)"
cat "$SUMMARY"
[ -f "$OUT/train_check.md" ] && grep -E '^\| (music|visual|audio) ' "$OUT/train_check.md"
exit 0

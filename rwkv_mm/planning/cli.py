"""`rwkv-mm plan RECIPE [key=value ...] [--gpus N --gpu-mem GB --peak-tflops T --mfu F]`."""

from __future__ import annotations

import argparse

from rwkv_mm.cli_types import positive_int


def _fraction(text: str) -> float:
    """A number in (0, 1) (argparse `type=`)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}")
    return value


def _positive(text: str) -> float:
    """A finite number > 0 (argparse `type=`)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not 0.0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def _cmd_plan(args: argparse.Namespace) -> int:
    from rwkv_mm.recipe import load_recipe

    from .plan import estimate
    from .report import format_estimate

    recipe = load_recipe(args.recipe, args.overrides)
    result = estimate(recipe, gpus=args.gpus, gpu_mem_gb=args.gpu_mem, peak_tflops=args.peak_tflops,
                      mfu=args.mfu, device=args.device, headroom=args.headroom, micro_batch=args.micro_batch)
    print(format_estimate(result, str(args.recipe)))
    return 0


def add_plan_parser(sub) -> None:
    """Register `rwkv-mm plan` on the top-level subparsers."""
    p = sub.add_parser("plan", help="size a recipe's training before renting machines: memory per GPU "
                                    "(DDP/FSDP, with and without grad_cp), largest micro-batch, FLOPs, time",
                       description="Builds the recipe's model on the meta device (no weights, data or GPU "
                                   "needed), traces one sequence's training step and prints the plan.")
    p.add_argument("recipe", help="a YAML path or a shipped recipe name (see `rwkv-mm ls`)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.micro_batch_size=4 data.ctx_len=4096")
    p.add_argument("--gpus", type=positive_int, default=1, help="data-parallel GPUs (default: %(default)s)")
    p.add_argument("--gpu-mem", type=_positive, default=80.0, help="GB per GPU (default: %(default)s)")
    p.add_argument("--peak-tflops", type=_positive, default=989.0,
                   help="dense bf16 peak per GPU (default: %(default)s, H100/H200; A100: 312)")
    p.add_argument("--mfu", type=_fraction, default=0.4, help="fraction of the peak reached (default: %(default)s)")
    p.add_argument("--headroom", type=_fraction, default=0.1,
                   help="share of GPU memory kept for the CUDA context, NCCL and fragmentation (default: %(default)s)")
    p.add_argument("--micro-batch", type=positive_int, default=None,
                   help="sequences per device and forward pass (default: the recipe's)")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                   help="plan GPUs (bf16 autocast, WKV kernel) or the CPU (fp32, chunked WKV)")
    p.set_defaults(func=_cmd_plan)

"""The `rwkv-mm` command line."""

from __future__ import annotations

import argparse
import sys
import time

from rwkv_mm.cli_types import (finite_float, int_in, non_empty_str, non_negative_float,
                               non_negative_int, positive_int, probability, seed, torch_device,
                               torch_dtype)


def _tokenizer_name(name: str) -> str:
    """A tokenizer name that `load_tokenizer` knows (argparse `type=`)."""
    import rwkv_mm.music  # noqa: F401 — registers "abc-bytes"
    from rwkv_mm.backbone import available_tokenizers

    if name.strip().lower() not in available_tokenizers():
        raise argparse.ArgumentTypeError(f"unknown tokenizer {name!r}; available: "
                                         f"{', '.join(available_tokenizers())}")
    return name


def _head_size(text: str) -> int:
    """Channels per head: a positive multiple of 4 (argparse `type=`)."""
    value = int_in(min=4)(text)
    if value % 4:
        raise argparse.ArgumentTypeError(f"expected a multiple of 4, got {text!r}")
    return value


def _cmd_generate(args: argparse.Namespace) -> int:
    import torch

    from rwkv_mm.backbone import (SamplingConfig, generate_text, load_model, load_tokenizer, load_tuned_state,
                                  to_decode_layout)

    from rwkv_mm.cpu import tune_malloc
    from rwkv_mm.training.adapter_cli import apply_adapter

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cpu":
        tune_malloc()  # reuse freed activation memory instead of page-faulting fresh memory
    model = to_decode_layout(apply_adapter(load_model(args.checkpoint, dtype=args.dtype, device=args.device),
                                           args.adapter))  # --adapter: run unmerged on top
    if args.state:  # a state-tuned initial state (state.pth) for this model
        load_tuned_state(model, args.state)
    tokenizer = load_tokenizer(args.tokenizer)
    cfg = model.config
    print(f"# {args.checkpoint}: RWKV-{cfg.version} L={cfg.n_layer} D={cfg.n_embd} V={cfg.vocab_size}",
          file=sys.stderr)
    sampling = SamplingConfig(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                              presence_penalty=args.presence_penalty,
                              frequency_penalty=args.frequency_penalty,
                              penalty_decay=args.penalty_decay)
    sys.stdout.write(args.prompt)
    sys.stdout.flush()
    start = time.perf_counter()
    text = generate_text(model, tokenizer, args.prompt, args.max_tokens, sampling, args.seed,
                         on_text=lambda s: (sys.stdout.write(s), sys.stdout.flush()))
    elapsed = time.perf_counter() - start
    n_new = len(tokenizer.encode(text))
    print(f"\n# {n_new} tokens in {elapsed:.2f} s", file=sys.stderr)
    return 0


def _cmd_init(args: argparse.Namespace) -> int:
    import torch

    from rwkv_mm.backbone import RWKVConfig, build_backbone, save_model

    from rwkv_mm.errors import ConfigError, UserError

    if args.n_embd % args.head_size:
        raise UserError(f"--n-embd {args.n_embd} is not a multiple of --head-size {args.head_size}",
                        fix=f"use e.g. --n-embd {max(1, round(args.n_embd / args.head_size)) * args.head_size}")
    torch.manual_seed(args.seed)
    try:
        config = RWKVConfig(**{name: getattr(args, name) for name in _INIT_FIELDS})
    except ConfigError as err:  # a combination of flags the architecture does not allow
        flag = "--" + err.key.replace("_", "-")
        name = f"{flag} {err.value}" if hasattr(args, err.key) else f"{err.key}={err.value!r}"
        raise UserError(f"{name}: expected {err.expected}") from None
    model = build_backbone(config)
    path = save_model(model, args.out)
    n = sum(p.numel() for p in model.parameters())
    scheme = {"7": "RWKV-LM's x070 scheme", "goldfinch": "GoldFinch's scheme"}.get(config.version, "paper App. I")
    print(f"wrote {path}: RWKV-{config.version} L={config.n_layer} D={config.n_embd} "
          f"V={config.vocab_size}, {n:,} parameters (randomly initialised, {scheme})")
    return 0


#: the RWKVConfig fields `rwkv-mm init` sets from its flags (--n-layer for n_layer, ...)
_INIT_FIELDS = ("version", "n_layer", "n_embd", "vocab_size", "head_size")


def _add_init_parser(sub) -> None:
    """`rwkv-mm init`: its flags default to RWKVConfig's own defaults (one declaration)."""
    import dataclasses

    from rwkv_mm.backbone import RWKVConfig

    default = {f.name: f.default for f in dataclasses.fields(RWKVConfig)}
    i = sub.add_parser("init", help="write a randomly initialised model (Eagle/Finch: paper App. I; "
                                    "Goose: RWKV-LM's x070 scheme) in the official layout")
    i.add_argument("--out", required=True, help="output .pth or .safetensors")
    i.add_argument("--version", default=default["version"], choices=("5", "6", "7", "goldfinch"),
                   help="5 (Eagle), 6 (Finch), 7 (Goose, RWKV-7 x070) or goldfinch (default: %(default)s)")
    i.add_argument("--n-layer", type=positive_int, default=default["n_layer"], help="(default: %(default)s)")
    i.add_argument("--n-embd", type=positive_int, default=default["n_embd"],
                   help="a multiple of --head-size (default: %(default)s)")
    i.add_argument("--vocab-size", type=positive_int, default=default["vocab_size"], help="(default: %(default)s)")
    i.add_argument("--head-size", type=_head_size, default=default["head_size"],
                   help="a multiple of 4 (default: %(default)s)")
    i.add_argument("--seed", type=seed, default=0)
    i.set_defaults(func=_cmd_init)


def _cmd_info(args: argparse.Namespace) -> int:
    from rwkv_mm.backbone import load_model

    model = load_model(args.checkpoint)
    cfg = model.config
    n = sum(p.numel() for p in model.parameters())
    print(f"{args.checkpoint}")
    for key, value in cfg.to_dict().items():
        print(f"  {key:18s} {value}")
    print(f"  {'parameters':18s} {n:,}")
    print(f"  {'state floats/seq':18s} {cfg.state_numel():,}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rwkv_mm.cpu import tune_malloc
    from rwkv_mm.recipe import default_run_dir, dump_yaml, load_recipe
    from rwkv_mm.training.run_dir import run_recipe
    from rwkv_mm.training.trainer import maybe_init_distributed

    recipe = load_recipe(args.recipe, args.overrides)
    run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(recipe)
    rank0 = not maybe_init_distributed() or torch_rank() == 0
    if rank0:
        print(f"# recipe {recipe.source} (runner {recipe.runner}) → {run_dir}\n{dump_yaml(recipe)}")
    tune_malloc()
    # rank 0 locks and checks the folder and writes config.yaml (after the resume checks)
    summary = run_recipe(recipe, run_dir, resume=args.resume,
                         existing="overwrite" if args.overwrite else "refuse",
                         allow_config_change=args.allow_config_change)
    if not rank0:
        return 0
    print("# summary")
    for key, value in summary.items():
        print(f"  {key:14s} {value:.4f}" if isinstance(value, float) else f"  {key:14s} {value}")
    return 0


def torch_rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_initialized() else 0


def _cmd_ls(args: argparse.Namespace) -> int:
    from rwkv_mm.recipe import list_recipes

    rows = list_recipes(args.root)
    w_name = max([len("recipe")] + [len(name) for name, _, _ in rows])
    w_runner = max([len("runner")] + [len(runner) for _, runner, _ in rows])
    print(f"{'recipe':{w_name}s}  {'runner':{w_runner}s}  description")
    for name, runner, description in rows:
        print(f"{name:{w_name}s}  {runner:{w_runner}s}  {description}".rstrip())
    return 0


class _OnlyNamed:
    """Stands in for an argparse subparsers object and keeps only the commands in `names`: how a
    modality's group commands are also added at the top level (`rwkv-mm chat` = `vision chat`)."""

    def __init__(self, sub, names: tuple[str, ...], group: str) -> None:
        self._sub, self._names, self._group = sub, names, group

    def add_parser(self, name: str, **kwargs) -> argparse.ArgumentParser:
        if name in self._names:
            kwargs["help"] = f"= {self._group} {name}: {kwargs.get('help', '')}".rstrip(": ")
            return self._sub.add_parser(name, **kwargs)
        return argparse.ArgumentParser(prog=name, add_help=False)  # another command: dropped


def add_modality_groups(sub) -> None:
    """One command group per declared modality (`rwkv-mm music|vision|audio ...`, see
    `rwkv_mm.modalities`), plus the top-level aliases a modality keeps (`chat`, `eval`)."""
    from rwkv_mm.modalities import modalities

    for modality in modalities():
        group = sub.add_parser(modality.name, help=modality.summary, description=modality.summary)
        commands = group.add_subparsers(dest=f"{modality.name}_command", required=True, metavar="COMMAND")
        modality.add_commands(commands)
        if modality.aliases:
            modality.add_commands(_OnlyNamed(sub, modality.aliases, modality.name))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `rwkv-mm` (all subcommands)."""
    from rwkv_mm.training.adapter_cli import add_adapter_argument, add_merge_parser

    parser = argparse.ArgumentParser(
        prog="rwkv-mm",
        description="Multimodal Eagle (RWKV-5), Finch (RWKV-6), Goose (RWKV-7) and GoldFinch: backbone, "
                    "front ends, recipes.")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an internal error (also RWKV_MM_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="generate text from a checkpoint (prefill, then recurrent decoding)")
    g.add_argument("--checkpoint", required=True, help="official RWKV-5/6 .pth or our .pth/.safetensors")
    add_adapter_argument(g)
    g.add_argument("--prompt", required=True, type=non_empty_str)
    g.add_argument("--state", default=None, help="a state-tuned initial state (state.pth, or a file with "
                                                 "blocks.<i>.att.time_state keys) to start from")
    g.add_argument("--max-tokens", type=positive_int, default=200)
    g.add_argument("--temperature", type=non_negative_float, default=1.0, help="0 = greedy")
    g.add_argument("--top-p", type=probability, default=0.85, help="in [0, 1]; 1 = off")
    g.add_argument("--top-k", type=non_negative_int, default=0, help="0 = off")
    g.add_argument("--presence-penalty", type=finite_float, default=0.0)
    g.add_argument("--frequency-penalty", type=finite_float, default=0.0)
    g.add_argument("--penalty-decay", type=probability, default=0.996, help="in [0, 1]")
    g.add_argument("--seed", type=seed, default=None)
    g.add_argument("--tokenizer", type=_tokenizer_name, default="world",
                   help="tokenizer name (default: world)")
    g.add_argument("--dtype", type=torch_dtype, default="fp32", help="fp32 | bf16 | fp16")
    g.add_argument("--device", type=torch_device, default="cpu", help="cpu, cuda, cuda:N or mps")
    g.add_argument("--threads", type=non_negative_int, default=0,
                   help="torch CPU threads (0 = torch default)")
    g.set_defaults(func=_cmd_generate)

    _add_init_parser(sub)

    t = sub.add_parser("train", help="run a training recipe: rwkv-mm train RECIPE [key=value ...]")
    t.add_argument("recipe", help="a YAML path or a shipped recipe name (see `rwkv-mm ls`)")
    t.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=3e-4 backbone.n_layer=6")
    t.add_argument("--run-dir", default=None, help="default: runs/<recipe name>, e.g. runs/visual/stage1_tiny; "
                   "a fresh run needs an empty or new folder")
    existing = t.add_mutually_exclusive_group()
    existing.add_argument("--resume", action="store_true",
                          help="continue from <run-dir>/checkpoints/last.pt (the config may change only "
                               "train.max_steps, logging, evaluation and generation settings)")
    existing.add_argument("--overwrite", action="store_true",
                          help="start afresh in a run folder that holds a run: remove what a run writes "
                               "there (other files are kept)")
    t.add_argument("--allow-config-change", action="store_true",
                   help="with --resume: accept changes to the model, data, batch size, seed, learning "
                        "rates, ... of the saved config.yaml")
    t.set_defaults(func=_cmd_train)

    from rwkv_mm.planning.cli import add_plan_parser

    add_plan_parser(sub)  # rwkv-mm plan: memory, micro-batch, FLOPs and time of a recipe
    add_merge_parser(sub)  # rwkv-mm merge: a train.peft adapter merged into its base model

    ls = sub.add_parser("ls", help="list the shipped recipes (name, runner, description)")
    ls.add_argument("--root", default=None, help="list this folder instead of the shipped recipes")
    ls.set_defaults(func=_cmd_ls)

    from rwkv_mm.demo.cli import add_demo_parser
    from rwkv_mm.quickstart import add_quickstart_parser

    add_quickstart_parser(sub)
    add_modality_groups(sub)
    add_demo_parser(sub)

    n = sub.add_parser("info", help="print the architecture inferred from a checkpoint")
    n.add_argument("checkpoint")
    n.set_defaults(func=_cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `rwkv-mm` console script.

    A user's mistake (`UserError`, a missing path, a full disk) prints one line
    `rwkv-mm: error: ...` and exits with status 2; any other exception is a bug: status 1, with
    the traceback under `--debug` or RWKV_MM_DEBUG=1."""
    import os
    import traceback

    from rwkv_mm.errors import describe

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("RWKV_MM_DEBUG", "") not in ("", "0")
    args = build_parser().parse_args([a for a in argv if a != "--debug"])  # --debug anywhere
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("rwkv-mm: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 — the one place that turns errors into exit codes
        status, message = describe(err)
        if debug:
            traceback.print_exc()
        print(f"rwkv-mm: error: {message}", file=sys.stderr)
        return status


if __name__ == "__main__":
    sys.exit(main())

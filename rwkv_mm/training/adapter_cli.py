"""`rwkv-mm merge --base X.pth --adapter DIR --out Y.pth`, and the `--adapter DIR` flag that
`generate`, `vision chat`, `vision eval` and `music generate` take (the adapter run unmerged).

Only argparse is imported here; the commands import torch and peft when they run.
"""

from __future__ import annotations

import argparse

from rwkv_mm.cli_types import torch_dtype


def add_adapter_argument(parser: argparse.ArgumentParser) -> None:
    """`--adapter DIR`: a train.peft run's adapter folder, applied to the model without merging."""
    parser.add_argument("--adapter", default=None, metavar="DIR",
                        help="a LoRA/PiSSA/DoRA adapter folder (a train.peft run's <run>/adapter) to run on "
                             "top of the model, unmerged")


def apply_adapter(model, adapter: str | None):
    """`model` with the adapter folder `adapter` loaded onto it (unmerged); `model` itself when
    `adapter` is None. UserError naming the folder/file when it does not fit."""
    if not adapter:
        return model
    from .adapter_files import load_adapter

    return load_adapter(model, adapter)


def _cmd_merge(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rwkv_mm.backbone import load_model, read_state_dict, save_model
    from rwkv_mm.errors import UserError

    from .adapter_files import load_adapter
    from .peft_tuning import merge_adapters

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise UserError("the output file exists", where=str(out), fix="pass --overwrite to replace it, or another --out")
    if out.suffix not in (".pth", ".safetensors"):
        raise UserError(f"--out {out}: expected a .pth or .safetensors file name")
    dtype = args.dtype
    if dtype is None:  # the output keeps the base's precision
        base = read_state_dict(args.base)  # memory-mapped: only the embedding's dtype is read here
        dtype = base["emb.weight"].dtype if "emb.weight" in base else None
        del base
    model = load_model(args.base)  # fp32: the merge is computed there
    merge_adapters(load_adapter(model, args.adapter))
    if dtype is not None and dtype.is_floating_point:
        model = model.to(dtype)
    path = save_model(model, out)
    print(f"wrote {path}: {args.base} + adapter {args.adapter} merged "
          f"({str(model.emb.weight.dtype).removeprefix('torch.')})")
    return 0


def add_merge_parser(sub) -> None:
    """Register `rwkv-mm merge` on `sub`."""
    m = sub.add_parser("merge", help="merge a LoRA/PiSSA/DoRA adapter into its base model: an official-layout file")
    m.add_argument("--base", required=True, help="the base model (.pth/.safetensors) the adapter was trained on")
    m.add_argument("--adapter", required=True, metavar="DIR", help="the adapter folder (a train.peft run's adapter/)")
    m.add_argument("--out", required=True, help="the merged model to write (.pth or .safetensors)")
    m.add_argument("--dtype", type=torch_dtype, default=None,
                   help="fp32 | bf16 | fp16 of the merged file (default: the base's; the merge runs in fp32)")
    m.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    m.set_defaults(func=_cmd_merge)

"""Which model each tab of the demo shows, and the checks every upload goes through.

Without a flag a tab takes its modality's model from the quickstart: the run folder of the
modality's last quickstart part (`rwkv_mm.modalities`), and in it the file the part's runner
exports (`DemoModel.run_output`, one of the runner's declared outputs). A model named by a flag
must exist (a UserError otherwise); a missing default only disables its tab, with a message
that says which command makes one.

Imports no gradio, torch or front end at import time: `rwkv-mm --help` builds the parser through
this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: Where `rwkv-mm quickstart` writes by default (its --out).
QUICKSTART_OUT = "runs/quickstart"


@dataclass(frozen=True)
class DemoModel:
    """A tab's model: the modality it comes from, its `rwkv-mm demo` flag, what the modality's
    last quickstart part exports (a path inside that run folder) and what the flag takes."""

    modality: str
    flag: str
    run_output: str
    takes: str

    @property
    def dest(self) -> str:
        """The argparse attribute of `flag`."""
        return self.flag.lstrip("-").replace("-", "_")


#: The three tabs' models, in tab order.
DEMO_MODELS = (
    DemoModel("vision", "--visual", "model", "a VisualRWKV model folder (<run>/model) or a released .pth"),
    DemoModel("audio", "--audio", "model.pt", "a tagger checkpoint (<run>/model.pt)"),
    DemoModel("music", "--music", "model.pth", "a byte-level ABC model (<run>/model.pth)"),
)


@dataclass(frozen=True)
class Found:
    """A tab's model path, or (path None) why the tab is disabled."""

    spec: DemoModel
    path: Path | None
    missing: str = ""


def quickstart_run(modality: str, out: str | Path = QUICKSTART_OUT) -> Path:
    """The run folder of `modality`'s last quickstart part under the quickstart folder `out`."""
    from rwkv_mm.errors import UserError
    from rwkv_mm.modalities import get_modality

    parts = get_modality(modality).quickstart
    if not parts:
        raise UserError(f"modality {modality!r} has no quickstart part to take a model from",
                        fix="name the model with its flag")
    return Path(out) / parts[-1].folder


def make_command(spec: DemoModel, out: str | Path = QUICKSTART_OUT) -> str:
    """The command that trains the model `spec`'s tab looks for by default."""
    where = "" if Path(out) == Path(QUICKSTART_OUT) else f" --out {out}"
    return f"rwkv-mm quickstart --only {spec.modality}{where}"


def find_model(spec: DemoModel, given: str | Path | None, out: str | Path = QUICKSTART_OUT) -> Found:
    """`given` when named (it must exist: a UserError naming the flag otherwise), else the
    quickstart's model, or a `Found` whose `missing` says which command makes one."""
    if given is not None:
        from rwkv_mm.errors import UserError

        path = Path(given)
        if not path.exists():
            raise UserError(f"{spec.flag} {given}: no such file or folder", fix=f"pass {spec.takes}")
        return Found(spec, path)
    path = quickstart_run(spec.modality, out) / spec.run_output
    if path.exists():
        return Found(spec, path)
    return Found(spec, None, f"No {spec.modality} model: {path} does not exist. Run "
                             f"`{make_command(spec, out)}` to train the tiny one, or start the demo "
                             f"with `rwkv-mm demo {spec.flag} PATH` ({spec.takes}).")


def find_models(given: dict[str, str | None], out: str | Path = QUICKSTART_OUT) -> list[Found]:
    """Every tab's model: `given` maps a flag's dest (`visual`, `audio`, `music`) to a path or None."""
    return [find_model(spec, given.get(spec.dest), out) for spec in DEMO_MODELS]


def check_upload(path: str | Path | None, kind: str, max_bytes: int) -> Path:
    """An uploaded file, before any decoder reads it: present and at most `max_bytes` long.

    The decoding itself is the loaders' (`open_image`, `load_audio`), as in training."""
    from rwkv_mm.errors import UserError

    if path is None or str(path) == "":
        raise UserError(f"no {kind} given", fix=f"upload {'an' if kind[0] in 'aeiou' else 'a'} {kind} first")
    path = Path(path)
    if not path.is_file():
        raise UserError(f"the {kind} upload is not a file", where=path.name)
    size = path.stat().st_size
    if size > max_bytes:
        raise UserError(f"the {kind} is {size / 2**20:.1f} MiB, over the demo's limit of "
                        f"{max_bytes / 2**20:g} MiB", where=path.name,
                        fix="use a smaller file, or start the demo with a larger --max-upload-mb")
    return path

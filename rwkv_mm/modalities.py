"""Modality registry: each modality package declares itself; nothing central lists them.

A modality is a subpackage `rwkv_mm/<name>/` with a `modality.py` that holds

    MODALITY = Modality(
        name="music",                            # `rwkv-mm music ...`
        summary="ABC music: generate tunes, loss vs position",
        cli="rwkv_mm.music.cli",                 # a module with add_commands(subparsers)
        runners=(),                              # modules with @register_runner, if not in rwkv_mm/runners/
        quickstart=(QuickstartPart("music/abc_tiny", "ABC music (byte-level Eagle)",
                                   keys=("train_loss", "val_loss")),),
        order=10,                                # place in `rwkv-mm --help` and in the quickstart
    )

`modalities()` finds these files (pkgutil over rwkv_mm's subpackages, no central list) and
imports them on first use; `modality.py` and the `cli` module must stay cheap to import (the
command handlers import the heavy modules when they run), so `rwkv-mm --help` stays fast. The
CLI builds one command group per modality, `rwkv-mm quickstart` runs the parts in `order`, and
`rwkv_mm.runners` imports the declared runner modules.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Modality", "QuickstartPart", "modalities", "get_modality", "quickstart_parts"]

#: The file that makes a subpackage of rwkv_mm a modality.
DECLARATION = "modality"


@dataclass(frozen=True)
class QuickstartPart:
    """One tiny shipped recipe that `rwkv-mm quickstart` trains into `<out>/<recipe stem>`.

    `keys` are the summary entries shown and recorded; `overrides` are applied before the user's,
    with `{out}` standing for the quickstart folder (e.g. `init_from={out}/stage1_tiny/model`)."""

    recipe: str
    title: str
    keys: tuple[str, ...] = ()
    overrides: tuple[str, ...] = ()

    @property
    def folder(self) -> str:
        """The part's run folder name under the quickstart folder (the recipe's file stem)."""
        return self.recipe.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Modality:
    """What a modality package adds to rwkv_mm (see the module docstring)."""

    name: str
    summary: str
    cli: str | None = None
    aliases: tuple[str, ...] = ()  # top-level names kept for commands of this group (`chat`)
    runners: tuple[str, ...] = ()
    quickstart: tuple[QuickstartPart, ...] = ()
    order: int = 100
    package: str = field(default="", compare=False)  # filled in by discovery

    def add_commands(self, sub) -> None:
        """Add this modality's commands to `sub` (an argparse subparsers object)."""
        if self.cli:
            add: Callable = getattr(importlib.import_module(self.cli), "add_commands")
            add(sub)


_FOUND: dict[str, Modality] | None = None


def _discover() -> dict[str, Modality]:
    import rwkv_mm

    found: dict[str, Modality] = {}
    for info in pkgutil.iter_modules(rwkv_mm.__path__):
        if not info.ispkg or info.name.startswith("_"):
            continue
        folder = [f"{p}/{info.name}" for p in rwkv_mm.__path__]
        if not any(m.name == DECLARATION for m in pkgutil.iter_modules(folder)):
            continue  # not a modality (training, runners, ...): not imported here
        package = f"rwkv_mm.{info.name}"
        declared = getattr(importlib.import_module(f"{package}.{DECLARATION}"), "MODALITY", None)
        if not isinstance(declared, Modality):
            raise TypeError(f"{package}.{DECLARATION}: expected MODALITY = Modality(...), got {declared!r}")
        if declared.name in found:
            raise ValueError(f"modality {declared.name!r} is declared twice "
                             f"({found[declared.name].package} and {package})")
        found[declared.name] = dataclasses.replace(declared, package=package)
    return dict(sorted(found.items(), key=lambda kv: (kv[1].order, kv[0])))


def modalities() -> list[Modality]:
    """Every declared modality, by `order` then name."""
    global _FOUND
    if _FOUND is None:
        _FOUND = _discover()
    return list(_FOUND.values())


def get_modality(name: str) -> Modality:
    """The modality called `name`; a UserError listing the known ones otherwise."""
    from rwkv_mm.errors import UserError

    for modality in modalities():
        if modality.name == name:
            return modality
    raise UserError(f"no modality is named {name!r}",
                    fix=f"modalities: {', '.join(m.name for m in modalities())}")


def quickstart_parts() -> list[QuickstartPart]:
    """The quickstart's parts: every modality's, in modality `order`, each modality's in the order
    it declares them."""
    return [part for modality in modalities() for part in modality.quickstart]

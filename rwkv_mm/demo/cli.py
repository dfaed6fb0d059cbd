"""`rwkv-mm demo`: the web demo of every modality (gradio, the optional `demo` extra).

    rwkv-mm demo                       # the quickstart's models from runs/quickstart/
    rwkv-mm demo --visual runs/stage2/model --audio runs/tagger/model.pt --music runs/abc/model.pth
    rwkv-mm demo --host 127.0.0.1 --port 7860 --max-upload-mb 20

Only argparse is imported here; the handler imports gradio (a one-line error naming the extra
to install when it is missing) and the models when it runs.
"""

from __future__ import annotations

import argparse
import signal
import sys

from rwkv_mm.cli_types import int_in, positive_int

from .models import DEMO_MODELS, QUICKSTART_OUT

#: The install command named when gradio is missing.
INSTALL = "pip install -e '.[demo]'"


def require_gradio() -> None:
    """A UserError saying how to install the demo extra when gradio is not importable."""
    import importlib.util

    from rwkv_mm.errors import UserError

    if importlib.util.find_spec("gradio") is None:
        raise UserError("`rwkv-mm demo` needs gradio, which is not installed", fix=f"{INSTALL} (the demo extra)")


def _cmd_demo(args: argparse.Namespace) -> int:
    require_gradio()
    from rwkv_mm.cpu import tune_malloc

    from .app import DemoContext, build_app, close_demo, launch, load_tabs, temp_folder
    from .models import find_models

    found = find_models({spec.dest: getattr(args, spec.dest) for spec in DEMO_MODELS}, args.runs)
    if all(item.path is None for item in found):
        from rwkv_mm.errors import UserError

        raise UserError(f"no model to show: nothing under {args.runs} and no --visual/--audio/--music",
                        fix="run `rwkv-mm quickstart` first (or name the models with the flags)")
    tune_malloc()
    tabs = load_tabs(found)
    for tab in tabs:
        print(f"# {tab.title}: {tab.path if tab.model is not None else tab.message}", file=sys.stderr)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"# note: --host {args.host} lets other machines reach the demo", file=sys.stderr)
    context = DemoContext(args.max_upload_mb * 2**20, temp_folder())
    app = build_app(tabs, context)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # `kill`: close the server, remove the files
    try:
        launch(app, context, args.host, args.port)
    finally:
        close_demo(app, context)
    return 0


def add_demo_parser(sub) -> None:
    """Register `rwkv-mm demo` on `sub` (the top-level subparsers)."""
    d = sub.add_parser("demo", help="web demo: chat about an image, tag a sound, write and hear a tune "
                                    f"(needs {INSTALL})",
                       description="A gradio page with one tab per modality. Without model flags it "
                                   "takes the quickstart's models; a tab without a model says which "
                                   "command makes one.")
    for spec in DEMO_MODELS:
        d.add_argument(spec.flag, default=None, metavar="PATH",
                       help=f"{spec.takes} (default: the quickstart's, under --runs)")
    d.add_argument("--runs", default=QUICKSTART_OUT,
                   help="the quickstart's --out folder the default models are taken from (default: %(default)s)")
    d.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: %(default)s, this machine only)")
    d.add_argument("--port", type=int_in(min=1, max=65535), default=7860, help="(default: %(default)s)")
    d.add_argument("--max-upload-mb", type=positive_int, default=20,
                   help="largest image or clip accepted, in MiB (default: %(default)s)")
    d.set_defaults(func=_cmd_demo)

"""What every tab's gradio handlers share: a user's mistake shown in the page.

A `UserError` (a bad upload, an empty question, a flag's value out of range) or a missing file
becomes a `gr.Error` with the same text `rwkv-mm` prints, shown in the page; any other exception
is a bug and reaches gradio (and the server's log) unchanged.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

from rwkv_mm.errors import UserError

#: What counts as the user's mistake (as in `rwkv_mm.cli.main`).
USER_MISTAKES = (UserError, FileNotFoundError)


def page_error(err: BaseException):
    """The gr.Error that shows `err`'s text in the page."""
    import gradio as gr

    return gr.Error(str(err), duration=30)


def shown_in_page(fn: Callable) -> Callable:
    """`fn` (a function or a generator function) with its user errors shown in the page."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def stream(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except USER_MISTAKES as err:
                raise page_error(err) from None
        return stream

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except USER_MISTAKES as err:
            raise page_error(err) from None
    return call

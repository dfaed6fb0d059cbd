"""The command line's one place for errors: a user's mistake is one line and exit status 2,
a bug is exit status 1 with the traceback only under --debug / RWKV_MM_DEBUG=1."""

from __future__ import annotations

import errno

import pytest

from rwkv_mm.errors import ConfigError, UserError, describe
from robustness.cli_utils import assert_user_error, run_cli


def test_unknown_recipe_is_a_user_error(tmp_path):
    assert_user_error(run_cli("train", "no/such_recipe", cwd=tmp_path), "no/such_recipe")


def test_bad_override_names_file_and_key(tmp_path):
    assert_user_error(run_cli("train", "music/abc_tiny", "train.lr=abc", cwd=tmp_path),
                      "abc_tiny.yaml", "train.lr")


def test_describe_sorts_user_errors_from_bugs():
    assert describe(UserError("bad", where="x.json", fix="fix it")) == (2, "bad, x.json: fix it")
    assert describe(ConfigError("train.lr", float("nan"), "a finite number"))[0] == 2
    assert describe(FileNotFoundError(errno.ENOENT, "No such file or directory", "a.pth")) == \
        (2, "a.pth: No such file or directory")
    assert describe(OSError(errno.ENOSPC, "No space left on device"))[1].startswith("disk full")
    assert describe(RuntimeError("basic_ios::clear: iostream error"))[1].startswith("disk full")
    status, message = describe(ZeroDivisionError("division by zero"))
    assert status == 1 and "bug" in message and "--debug" in message


@pytest.mark.parametrize("debug", ["flag", "env", None])
def test_internal_errors_exit_1_traceback_only_with_debug(monkeypatch, debug):
    import rwkv_mm.cli as cli

    def boom(args):
        raise ZeroDivisionError("planted bug")

    real = cli.build_parser

    def parser():
        p = real()
        p._subparsers._group_actions[0].choices["ls"].set_defaults(func=boom)
        return p

    monkeypatch.setattr(cli, "build_parser", parser)
    monkeypatch.delenv("RWKV_MM_DEBUG", raising=False)
    args = ["ls"]
    if debug == "flag":
        args.append("--debug")
    elif debug == "env":
        monkeypatch.setenv("RWKV_MM_DEBUG", "1")
    result = run_cli(*args)
    assert result.rc == 1
    assert "planted bug" in result.err
    assert ("Traceback" in result.err) == (debug is not None)

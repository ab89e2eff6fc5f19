"""How the CLI exits when something unexpected happens: never with a code that means a verdict."""

from __future__ import annotations

import pytest

from harness import cli
from harness.errors import ExitCode


def test_an_unexpected_exception_exits_internal_not_compliance_failed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bug surfaces as exit 70 with its traceback, never as exit 1 (a compliance failure)."""

    def broken() -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(cli, "app", broken)
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == int(ExitCode.INTERNAL) == 70
    err = capsys.readouterr().err
    assert "RuntimeError: boom" in err and "internal error" in err

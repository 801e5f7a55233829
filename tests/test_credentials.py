"""Password sources: environment variable, a command's first line, and no terminal to prompt on."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from batchmail.campaign import SmtpConfig
from batchmail.credentials import resolve_password
from batchmail.errors import CampaignError


def smtp(**kwargs: object) -> SmtpConfig:
    return SmtpConfig(host="h", port=587, security="starttls", username="bob", **kwargs)  # type: ignore[arg-type]


def test_no_username_means_no_password() -> None:
    assert resolve_password(SmtpConfig("h", 25, "none"), "c.yaml") is None


def test_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BM_TEST_PW", "hunter2")
    assert resolve_password(smtp(password_env="BM_TEST_PW"), "c.yaml") == "hunter2"
    monkeypatch.delenv("BM_TEST_PW")
    with pytest.raises(CampaignError, match="BM_TEST_PW is not set"):
        resolve_password(smtp(password_env="BM_TEST_PW"), "c.yaml")


def test_from_command_first_line(tmp_path: Path) -> None:
    script = tmp_path / "helper.py"
    script.write_text("print('s3cret')\nprint('second line ignored')\n")
    command = f"{sys.executable} {script}"
    assert resolve_password(smtp(password_command=command), "c.yaml") == "s3cret"


def test_failing_command_does_not_show_its_output(tmp_path: Path) -> None:
    script = tmp_path / "helper.py"
    script.write_text(
        "import sys\nprint('s3cret')\nsys.stderr.write('vault locked\\n')\nsys.exit(4)\n"
    )
    with pytest.raises(CampaignError) as caught:
        resolve_password(smtp(password_command=f"{sys.executable} {script}"), "c.yaml")
    assert "exited with 4: vault locked" in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_missing_command() -> None:
    with pytest.raises(CampaignError, match="command not found: no-such-helper-xyz"):
        resolve_password(smtp(password_command="no-such-helper-xyz"), "c.yaml")


def test_no_terminal_to_prompt_on(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with (tmp_path / "in").open("w+") as not_a_tty:
        monkeypatch.setattr(sys, "stdin", not_a_tty)
        with pytest.raises(CampaignError, match="no terminal"):
            resolve_password(smtp(), "c.yaml")

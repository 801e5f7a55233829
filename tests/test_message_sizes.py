"""Large messages: ``message.max_size`` warnings, a server's SIZE limit, and a command that
runs out of memory. The real ``batchmail`` on real campaign directories, against a real
aiosmtpd server."""

from __future__ import annotations

import re
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from campaign_files import batchmail, people, status_json, write_campaign
from servers import MODES, StartServer

from batchmail.byte_sizes import parse_size

MB = 1000 * 1000


def with_attachments(directory: Path, sizes: dict[str, int], **options: object) -> Path:
    """A campaign whose rows attach files/<name> of the given sizes (sparse: no disk)."""
    rows = [{**row, "file": name} for row, name in zip(people(len(sizes)), sizes, strict=True)]
    campaign = write_campaign(
        directory,
        rows,
        html=None,
        **{"smtp": "embedded", **options},  # type: ignore[arg-type]
    )
    (directory / "files").mkdir()
    for name, size in sizes.items():
        with (directory / "files" / name).open("wb") as file:
            file.truncate(size)
    return campaign


def test_check_warns_once_for_the_rows_over_max_size(tmp_path: Path) -> None:
    campaign = with_attachments(
        tmp_path,
        {"small.bin": 1000, "big1.bin": 2 * MB, "big2.bin": 3 * MB},
        message={"attachments": ["files/{{ file }}"], "max_size": "2MB"},
    )
    result = batchmail("check", campaign)
    assert result.returncode == 0, result.stderr
    assert "ok, 3 recipients" in result.stdout
    assert result.stderr.splitlines() == [
        "batchmail: 2 warnings:",
        "  people.csv, rows 2-3 (2 rows): the message is larger than message.max_size (2 MB): "
        "many servers refuse it (Gmail and Microsoft 365 over 25 MB; attachments count a third "
        "more, base64-encoded) (first: row 2, 2.74 MB)",
    ]


def test_the_run_warns_too_and_sends(tmp_path: Path) -> None:
    campaign = with_attachments(
        tmp_path,
        {"big.bin": 2 * MB},
        message={"attachments": ["files/{{ file }}"], "max_size": "1 MiB"},
    )
    result = batchmail("run", campaign, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "people.csv, row 1, 2.74 MB: the message is larger than message.max_size (1.05 MB)" in (
        result.stderr
    )


def test_max_size_zero_never_warns(tmp_path: Path) -> None:
    campaign = with_attachments(
        tmp_path, {"big.bin": 2 * MB}, message={"attachments": ["files/{{ file }}"], "max_size": 0}
    )
    result = batchmail("check", campaign)
    assert (result.returncode, result.stderr) == (0, "")


def test_a_bad_max_size_is_a_problem_of_the_campaign_file(tmp_path: Path) -> None:
    campaign = with_attachments(tmp_path, {"a.bin": 10}, message={"max_size": "25 M"})
    result = batchmail("check", campaign)
    assert result.returncode == 2
    assert "campaign.yaml: message.max_size: expected a size" in result.stderr


@pytest.mark.parametrize(
    ("value", "size"),
    [(25, 25), ("25MB", 25 * MB), ("10 MiB", 10 << 20), ("1.5 GB", 1500 * MB), ("3kb", 3000)],
)
def test_sizes_are_read_as_written(value: object, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize("value", ["25", "25 M", "1e3MB", -1, 2.5, True, "25 MB extra"])
def test_anything_else_is_refused(value: object) -> None:
    assert isinstance(parse_size(value), str)


@pytest.mark.parametrize("mode", MODES)
def test_a_message_over_the_servers_size_is_failed_unsent_and_the_others_go(
    tmp_path: Path, start_smtp_server: StartServer, mode: str
) -> None:
    server = start_smtp_server(data_size_limit=MB, mode=mode)
    sizes = {"a.bin": 1000, "big.bin": 2 * MB, "c.bin": 1000}
    campaign = with_attachments(
        tmp_path, sizes, server=server, smtp=None, message={"attachments": ["files/{{ file }}"]}
    )
    result = batchmail("run", campaign)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(m.rcpt_tos[0] for m in server.messages) == [
        "person1@example.org",
        "person3@example.org",
    ]
    assert server.commands.count("MAIL") == 2  # nothing of the large one went out
    (failed,) = status_json(campaign)["recipients"]
    assert failed["key"] == "person2@example.org"
    assert failed["status"] == "failed"
    assert re.fullmatch(
        r"not sent: the message is 2\.74 MB \(2,7\d\d,\d{3} bytes\), larger than the 1 MB "
        r"\(1,000,000 bytes\) the server takes \(its SIZE, RFC 1870\)",
        failed["reply"],
    )


def _limit_memory() -> None:
    limit = 300 << 20  # address space: the interpreter and batchmail fit in under 100 MB
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _with_limited_memory(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "batchmail", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_limit_memory,
    )


def test_an_attachment_is_held_once_encoded(tmp_path: Path) -> None:
    # 64 MB, 87 MB base64-encoded: the file, its encoding and the message each held once
    # or twice would not fit in the limit.
    campaign = with_attachments(
        tmp_path,
        {"a.bin": 64 << 20, "b.bin": 1000},
        message={"attachments": ["files/{{ file }}", "files/b.bin"], "max_size": 0},
    )
    checked = _with_limited_memory("check", campaign)
    assert checked.returncode == 0, checked.stderr
    dry = _with_limited_memory("run", "--dry-run", campaign, "--out", tmp_path / "out")
    assert dry.returncode == 0, dry.stderr
    eml = sorted((tmp_path / "out").glob("*.eml"))
    assert len(eml) == 2 and eml[0].stat().st_size > 87 * MB


def test_running_out_of_memory_is_exit_3_with_a_hint(tmp_path: Path) -> None:
    # 256 MB of attachment, 341 MB base64-encoded: more than the limit allows.
    campaign = with_attachments(
        tmp_path, {"big.bin": 256 << 20}, message={"attachments": ["files/{{ file }}"]}
    )
    result = _with_limited_memory("check", campaign)
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("batchmail: check: out of memory.")
    assert "check the attachments' sizes" in result.stderr
    assert "message.max_size" in result.stderr

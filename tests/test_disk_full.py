"""Out of space, over a size limit, or read-only, while the real ``batchmail`` writes its
journal or a dry run's files: the run stops with exit 3 and one clear line (no traceback),
``status`` still works, the journal is sound, and once there is room again a run finishes
without mailing anybody twice.

A small disk is a private tmpfs mounted in a mount namespace of the test's own (``unshare
--mount``, as root); where that is not allowed those tests skip, and the same failures are
also produced without any mount by a file size limit (RLIMIT_FSIZE) set in the child.
"""

from __future__ import annotations

import collections
import csv
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from campaign_files import batchmail, parse, people, write_campaign
from journal_probe import JOURNAL_NAME, integrity, journal_file, snapshot, statuses
from servers import SmtpTestServer, StartServer

RECIPIENTS = 200


@dataclass(frozen=True)
class Result:
    """One command run inside the namespace script: exit code and output."""

    returncode: int
    stdout: str
    stderr: str


def command(name: str, *args: str | Path) -> str:
    """A shell line running ``batchmail *args`` whose exit code and output land in files
    named after ``name`` under $OUT, for ``results`` to read back."""
    quoted = " ".join(f"'{arg}'" for arg in args)
    return (
        f'"$PYTHON" -m batchmail {quoted} >"$OUT/{name}.out" 2>"$OUT/{name}.err"; '
        f'echo $? >"$OUT/{name}.rc"\n'
    )


def results(out: Path, name: str) -> Result:
    return Result(
        int((out / f"{name}.rc").read_text()),
        (out / f"{name}.out").read_text(),
        (out / f"{name}.err").read_text(),
    )


def in_mount_namespace(script: str, out: Path) -> None:
    """Run ``script`` (sh) in a mount namespace of its own, with $OUT and $PYTHON set; the
    script exits 97 when it cannot mount, and the test skips."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable}
    process = subprocess.run(
        ["unshare", "--mount", "sh", "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    if process.returncode == 97 or "unshare failed" in process.stderr:
        pytest.skip(f"cannot mount a private tmpfs here: {process.stderr.strip()}")
    assert process.returncode == 0, process.stderr


def assert_clean_abort(result: Result, *phrases: str) -> None:
    """Exit 3, the phrases in one `batchmail:` line, and no Python traceback."""
    assert result.returncode == 3, result
    assert "Traceback" not in result.stderr, result.stderr
    line = next((text for text in result.stderr.splitlines() if text.startswith("batchmail: ")), "")
    for phrase in phrases:
        assert phrase in line, result.stderr


def status_of(result: Result) -> dict[str, object]:
    assert result.returncode in (0, 1), result
    assert "Traceback" not in result.stderr
    return json.loads(result.stdout)


def received_counts(server: SmtpTestServer) -> collections.Counter[str]:
    return collections.Counter(message.rcpt_tos[0] for message in server.messages)


def assert_sent_once(
    server: SmtpTestServer, final: dict[str, object], in_flight_at_failure: set[str]
) -> None:
    """Everybody has an outcome; each recipient received at most one copy, each `sent` one
    exactly one; only a message in flight when the journal failed is left `unknown`."""
    counts = final["counts"]
    assert isinstance(counts, dict)
    assert counts["pending"] == 0 and counts["sent"] + counts["unknown"] == RECIPIENTS, counts
    recipients = final["recipients"]
    assert isinstance(recipients, list)
    unknown = {entry["key"] for entry in recipients if entry["status"] == "unknown"}
    assert unknown <= in_flight_at_failure
    received = received_counts(server)
    assert max(received.values()) == 1, [key for key, n in received.items() if n > 1]
    for row in people(RECIPIENTS):
        if row["email"] not in unknown:
            assert received[row["email"]] == 1, row["email"]


# --- the journal ------------------------------------------------------------------------


def test_journal_on_a_disk_that_fills_mid_run(
    tmp_path: Path, start_smtp_server: StartServer
) -> None:
    server = start_smtp_server()
    # One message per batch: each journal write is small, so the disk fills mid-run.
    campaign = write_campaign(tmp_path / "c", people(RECIPIENTS), server=server, send={"window": 1})
    state = campaign.parent / ".batchmail"
    state.mkdir()
    copy = tmp_path / "after-failure"
    out = tmp_path / "out"
    # 512 KiB: room for the schema and a few dozen messages' WAL frames, not for 200.
    script = (
        f"mount -t tmpfs -o size=512k tmpfs '{state}' || exit 97\n"
        + command("full", "run", campaign, "--quiet")
        + f"cp -a '{state}' '{copy}'\n"
        + command("status_full", "status", campaign, "--json")
        + f"mount -o remount,size=64m '{state}' || exit 1\n"
        + command("roomy", "run", campaign, "--quiet")
        + command("status_roomy", "status", campaign, "--json")
        + f"cp -a '{state}' '{tmp_path / 'after-recovery'}'\n"
    )
    in_mount_namespace(script, out)

    assert_clean_abort(results(out, "full"), "cannot write the journal", "free some disk space")
    # SQLite's words, or the system's if the journal's log found the disk full first.
    reason = ("database or disk is full", "No space left on device")
    assert any(words in results(out, "full").stderr for words in reason), results(out, "full")
    at_failure = status_of(results(out, "status_full"))["counts"]
    assert isinstance(at_failure, dict)
    assert at_failure["pending"] > 0  # it stopped part way...
    assert at_failure["sent"] + at_failure["unknown"] > 0  # ...after sending some
    failed_journal = copy / "test-campaign" / JOURNAL_NAME
    assert integrity(failed_journal) == "ok"
    in_flight = {key for key, status in statuses(failed_journal).items() if status == "in_flight"}

    assert results(out, "roomy").returncode in (0, 1), results(out, "roomy")
    final = status_of(results(out, "status_roomy"))
    assert_sent_once(server, final, in_flight)
    assert integrity(tmp_path / "after-recovery" / "test-campaign" / JOURNAL_NAME) == "ok"
    print(f"disk full after {at_failure}; unknown {final['counts']['unknown']}")  # type: ignore[index]


def limit_file_size(limit: int) -> Callable[[], None]:
    """A preexec_fn: writes past ``limit`` bytes fail with EFBIG, as on a full disk (and
    SIGXFSZ, which would kill the process instead, is ignored, across the exec too)."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    return apply


def run_limited(limit: int, *args: str | Path) -> Result:
    process = subprocess.run(
        [sys.executable, "-m", "batchmail", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        preexec_fn=limit_file_size(limit),
    )
    return Result(process.returncode, process.stdout, process.stderr)


def test_journal_past_a_file_size_limit_mid_run(
    tmp_path: Path, start_smtp_server: StartServer
) -> None:
    server = start_smtp_server()
    # Small windows, so that the journal takes many small transactions, as it does with
    # DATA; with 64 messages a window, 200 fit in four.
    campaign = write_campaign(tmp_path, people(RECIPIENTS), server=server, send={"window": 4})
    journal = journal_file(campaign)

    # 300 kB: the WAL outgrows it after a few dozen messages.
    assert_clean_abort(
        run_limited(300_000, "run", campaign, "--quiet"),
        "cannot write the journal",
        "disk I/O error",
        "check that the disk is not full",
    )
    at_failure = batchmail("status", campaign, "--json")
    counts = json.loads(at_failure.stdout)["counts"]
    assert at_failure.returncode == 1 and "Traceback" not in at_failure.stderr
    assert counts["pending"] > 0 and counts["sent"] + counts["unknown"] > 0, counts
    copy = snapshot(journal, tmp_path / "after-failure")
    assert integrity(copy) == "ok"
    in_flight = {key for key, status in statuses(copy).items() if status == "in_flight"}

    rerun = batchmail("run", campaign, "--quiet")
    assert rerun.returncode in (0, 1) and "Traceback" not in rerun.stderr, rerun.stderr
    assert_sent_once(server, json.loads(batchmail("status", campaign, "--json").stdout), in_flight)
    assert integrity(journal) == "ok"


def test_a_read_only_journal_stops_run_and_resend_but_not_status(
    tmp_path: Path, start_smtp_server: StartServer
) -> None:
    server = start_smtp_server()
    rows = people(20)
    campaign = write_campaign(tmp_path / "c", rows, server=server)
    state = campaign.parent / ".batchmail"
    state.mkdir()
    out = tmp_path / "out"
    first_rows = "\n".join(f"{r['email']},{r['name']},{r['code']}" for r in rows[:10])
    csv = campaign.parent / "people.csv"
    full_csv = csv.read_text()
    csv.write_text("email,name,code\n" + first_rows + "\n")
    script = (
        f"mount -t tmpfs -o size=1m tmpfs '{state}' || exit 97\n"
        + command("first", "run", campaign, "--quiet")
        + f"cp '{tmp_path / 'full.csv'}' '{csv}'\n"
        + f"mount -o remount,ro '{state}' || exit 1\n"
        + command("status_ro", "status", campaign, "--json")
        + command("run_ro", "run", campaign, "--quiet")
        + command("resend_ro", "resend", campaign, "--quiet")
        + f"mount -o remount,rw '{state}' || exit 1\n"
        + command("run_rw", "run", campaign, "--quiet")
    )
    (tmp_path / "full.csv").write_text(full_csv)
    in_mount_namespace(script, out)

    assert results(out, "first").returncode == 0, results(out, "first")
    counts = status_of(results(out, "status_ro"))["counts"]
    assert isinstance(counts, dict)
    assert (counts["sent"], counts["pending"], counts["unknown"]) == (10, 10, 0), counts
    for name in ("run_ro", "resend_ro"):
        assert_clean_abort(results(out, name), "Read-only file system")
    assert results(out, "run_rw").returncode == 0, results(out, "run_rw")
    received = received_counts(server)
    assert len(received) == 20 and max(received.values()) == 1


def test_a_state_directory_that_cannot_be_made_stops_the_run(
    tmp_path: Path, start_smtp_server: StartServer
) -> None:
    # Root ignores permission bits: a file where the state directory should be stops it.
    server = start_smtp_server()
    campaign = write_campaign(tmp_path, people(5), server=server)
    (tmp_path / ".batchmail").write_text("not a directory")
    assert_clean_abort(_result(batchmail("run", campaign, "--quiet")), "Not a directory")
    status = batchmail("status", campaign, "--json")
    assert status.returncode == 1 and json.loads(status.stdout)["counts"]["pending"] == 5
    assert server.messages == []


def _result(process: subprocess.CompletedProcess[str]) -> Result:
    return Result(process.returncode, process.stdout, process.stderr)


# --- the dry run ------------------------------------------------------------------------


def manifest_rows(directory: Path) -> list[list[str]]:
    with (directory / "manifest.csv").open(newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))[1:]


def assert_complete_outbox(directory: Path, count: int) -> None:
    """Every recipient once in the manifest, each with its file; no half-written leftovers."""
    rows = manifest_rows(directory)
    assert [int(row[0]) for row in rows] == list(range(1, count + 1))
    for row in rows:
        assert (directory / row[2]).stat().st_size > 0
    assert not list(directory.glob(".partial-*"))
    assert len(list(directory.glob("*.eml"))) == count


def assert_listed_files_exist(directory: Path) -> int:
    """Each file the manifest lists after a failure is there, whole; returns how many. (A
    last row cut short by the failure is not counted.)"""
    rows = [row for row in manifest_rows(directory) if len(row) == 6]
    for _, _, name, _, _, message_id in rows:
        data = (directory / name).read_bytes()
        assert parse(data)["Message-ID"] == message_id and data.endswith(b"\r\n"), name
    return len(rows)


def test_dry_run_on_a_disk_that_fills(tmp_path: Path) -> None:
    campaign = write_campaign(tmp_path / "c", people(RECIPIENTS), smtp="embedded")
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    out = tmp_path / "out"
    copy = tmp_path / "outbox-at-failure"
    script = (
        f"mount -t tmpfs -o size=128k tmpfs '{outbox}' || exit 97\n"
        + command("full", "run", campaign, "--dry-run", "--out", outbox, "--quiet")
        + f"cp -a '{outbox}' '{copy}'\n"
        + command("status", "status", campaign, "--json")
        + f"mount -o remount,size=16m '{outbox}' || exit 1\n"
        + command("roomy", "run", campaign, "--dry-run", "--out", outbox, "--quiet")
        + f"cp -a '{outbox}' '{tmp_path / 'outbox-after'}'\n"
    )
    in_mount_namespace(script, out)

    assert_clean_abort(
        results(out, "full"), "cannot write the dry-run outbox", "No space left on device"
    )
    written = assert_listed_files_exist(copy)
    assert 0 < written < RECIPIENTS
    assert not list(copy.glob(".partial-*"))  # the file that did not fit was removed
    counts = status_of(results(out, "status"))["counts"]
    assert counts["pending"] == RECIPIENTS  # type: ignore[index]  # a dry run journals nothing
    assert results(out, "roomy").returncode == 0, results(out, "roomy")
    assert_complete_outbox(tmp_path / "outbox-after", RECIPIENTS)


def test_dry_run_manifest_past_a_file_size_limit(tmp_path: Path) -> None:
    campaign = write_campaign(tmp_path, people(RECIPIENTS), smtp="embedded")
    outbox = tmp_path / "outbox"
    # Each .eml is well under 10 kB; the manifest, a row per message, outgrows it.
    result = run_limited(10_000, "run", campaign, "--dry-run", "--out", outbox, "--quiet")
    assert_clean_abort(result, "cannot write the dry-run outbox", "manifest.csv", "too large")
    assert 0 < assert_listed_files_exist(outbox) < RECIPIENTS
    assert not journal_file(campaign).exists()

    rerun = batchmail("run", campaign, "--dry-run", "--out", outbox, "--quiet")
    assert rerun.returncode == 0, rerun.stderr
    assert_complete_outbox(outbox, RECIPIENTS)


def test_dry_run_into_a_path_that_cannot_be_a_directory(tmp_path: Path) -> None:
    campaign = write_campaign(tmp_path, people(3), smtp="embedded")
    (tmp_path / "blocked").write_text("a file where the outbox directory should be")
    result = batchmail("run", campaign, "--dry-run", "--out", tmp_path / "blocked" / "out")
    assert_clean_abort(_result(result), "cannot write the dry-run outbox", "Not a directory")

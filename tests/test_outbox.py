"""The dry-run outbox on real directories: exact bytes, safe names, the manifest, failures."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from batchmail.errors import RunAborted
from batchmail.outbox import MANIFEST_HEADER, Outbox, eml_name
from batchmail.outcomes import ComposedMessage, Envelope, Outcome, Status


def message(key: str, row: int, data: bytes = b"") -> ComposedMessage:
    envelope = Envelope("news@example.com", (key, "copy@example.com"))
    body = data or f"To: {key}\r\nSubject: Hello\r\n\r\nHi.\r\n".encode()
    return ComposedMessage(row, key, envelope, f"<{row}@example.com>", (body,))


def manifest_rows(directory: Path) -> list[list[str]]:
    with (directory / "manifest.csv").open(encoding="utf-8", newline="") as file:
        return list(csv.reader(file))


def never_called() -> None:
    raise AssertionError("before_data was not expected here")


def test_files_hold_the_message_bytes_exactly(tmp_path: Path) -> None:
    # CRLF, a bare CR, 8-bit bytes and no final newline: nothing may be translated.
    data = b"Subject: =?utf-8?q?caf=C3=A9?=\r\n\r\nline\rone\r\n\xc3\xa9\x00end"
    calls: list[str] = []
    with Outbox(tmp_path / "outbox") as outbox:
        outcome = outbox.send(message("ann@example.com", 1, data), lambda: calls.append("data"))
    name = "000001-ann@example.com.eml"
    assert (tmp_path / "outbox" / name).read_bytes() == data
    assert outcome == Outcome(Status.SENT, 250, f"written to {name}")
    assert calls == ["data"]


def test_a_message_made_from_one_bytes_object_is_that_message(tmp_path: Path) -> None:
    # A message made as before parts (its bytes where the parts go) must not be read as a
    # tuple of byte values.
    data = b"To: ann@example.com\r\nSubject: Hello\r\n\r\nHi.\r\n"
    envelope = Envelope("news@example.com", ("ann@example.com",))
    made = ComposedMessage(1, "ann@example.com", envelope, "<1@example.com>", data)  # type: ignore[arg-type]
    assert made.parts == (data,) and made.data == data and made.size == len(data)
    with Outbox(tmp_path / "outbox") as outbox:
        outbox.send(made, lambda: None)
    assert (tmp_path / "outbox" / "000001-ann@example.com.eml").read_bytes() == data


def test_before_data_comes_before_the_file_exists(tmp_path: Path) -> None:
    directory = tmp_path / "outbox"
    seen: list[bool] = []
    with Outbox(directory) as outbox:
        outbox.send(
            message("ann@example.com", 1),
            lambda: seen.append((directory / "000001-ann@example.com.eml").exists()),
        )
    assert seen == [False]


def test_a_failing_before_data_writes_nothing(tmp_path: Path) -> None:
    directory = tmp_path / "outbox"

    def journal_unwritable() -> None:
        raise RunAborted("cannot write the journal")

    with Outbox(directory) as outbox, pytest.raises(RunAborted):
        outbox.send(message("ann@example.com", 1), journal_unwritable)
    assert sorted(p.name for p in directory.iterdir()) == ["manifest.csv"]
    assert manifest_rows(directory) == [list(MANIFEST_HEADER)]


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("ann@example.com", "000007-ann@example.com.eml"),
        ("a.b+tag-1@x.example", "000007-a.b+tag-1@x.example.eml"),
        ("../../etc/x", "000007-.._.._etc_x.eml"),
        ("a/b", "000007-a_b.eml"),
        ("..", "000007-...eml"),
        ("", "000007-.eml"),
        ("José Müller <j@x>", "000007-Jos__M_ller__j@x_.eml"),
        ("x" * 100, "000007-" + "x" * 60 + ".eml"),
    ],
)
def test_names_are_safe(key: str, expected: str) -> None:
    assert eml_name(7, key) == expected


@pytest.mark.parametrize("key", ["../../etc/x", "a/b", "/abs", "..", "C:\\x\\..\\y", "a\x00b"])
def test_every_file_stays_inside_the_outbox(tmp_path: Path, key: str) -> None:
    directory = tmp_path / "deep" / "outbox"
    with Outbox(directory) as outbox:
        outbox.send(message(key, 1), lambda: None)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {p.parent for p in written} == {directory}
    assert len(written) == 2  # the message and the manifest


def test_manifest_lists_every_message(tmp_path: Path) -> None:
    directory = tmp_path / "outbox"
    with Outbox(directory) as outbox:
        outbox.send(message("ann@example.com", 1), lambda: None)
        outbox.send(message('bob, "the builder"@example.com', 2), lambda: None)
    assert manifest_rows(directory) == [
        ["row", "key", "file", "envelope_sender", "envelope_recipients", "message_id"],
        [
            "1",
            "ann@example.com",
            "000001-ann@example.com.eml",
            "news@example.com",
            "ann@example.com copy@example.com",
            "<1@example.com>",
        ],
        [
            "2",
            'bob, "the builder"@example.com',
            "000002-bob___the_builder_@example.com.eml",
            "news@example.com",
            'bob, "the builder"@example.com copy@example.com',
            "<2@example.com>",
        ],
    ]


def test_manifest_is_readable_after_each_send(tmp_path: Path) -> None:
    # A killed dry run still lists every file it wrote.
    directory = tmp_path / "outbox"
    with Outbox(directory) as outbox:
        outbox.send(message("ann@example.com", 1), lambda: None)
        assert len(manifest_rows(directory)) == 2


def test_a_rerun_overwrites_files_and_restarts_the_manifest(tmp_path: Path) -> None:
    directory = tmp_path / "outbox"
    with Outbox(directory) as outbox:
        outbox.send(message("ann@example.com", 1, b"first version"), lambda: None)
        outbox.send(message("bob@example.com", 2), lambda: None)
    (directory / ".partial-leftover").write_bytes(b"half a message")  # a killed write
    with Outbox(directory) as outbox:
        outbox.send(message("ann@example.com", 1, b"second version"), lambda: None)
    assert (directory / "000001-ann@example.com.eml").read_bytes() == b"second version"
    assert [row[1] for row in manifest_rows(directory)] == ["key", "ann@example.com"]
    assert not (directory / ".partial-leftover").exists()


def test_reconnecting_keeps_the_manifest(tmp_path: Path) -> None:
    # The runner closes and reconnects its transport every max_per_session messages.
    directory = tmp_path / "outbox"
    outbox = Outbox(directory)
    assert not outbox.connected
    outbox.connect()
    assert outbox.connected
    outbox.send(message("ann@example.com", 1), lambda: None)
    outbox.close()
    assert not outbox.connected
    outbox.connect()
    outbox.send(message("bob@example.com", 2), lambda: None)
    outbox.close()
    assert [row[0] for row in manifest_rows(directory)] == ["row", "1", "2"]


def test_the_constructor_touches_nothing(tmp_path: Path) -> None:
    Outbox(tmp_path / "outbox")
    assert not (tmp_path / "outbox").exists()


def test_send_before_open_is_a_programming_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not open"):
        Outbox(tmp_path / "outbox").send(message("ann@example.com", 1), never_called)


def test_a_directory_that_cannot_be_made_aborts(tmp_path: Path) -> None:
    # Tests run as root, which ignores permission bits: a file in the way blocks even root.
    (tmp_path / "state").write_text("a file where the directory should be")
    directory = tmp_path / "state" / "outbox"
    with pytest.raises(RunAborted, match=f"cannot write the dry-run outbox {directory}: "):
        Outbox(directory).open()


def test_a_message_file_that_cannot_be_written_aborts_and_leaves_no_partial(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "outbox"
    (directory / "000001-ann@example.com.eml").mkdir(parents=True)  # a directory in the way
    with Outbox(directory) as outbox, pytest.raises(RunAborted, match="000001-ann@example.com.eml"):
        outbox.send(message("ann@example.com", 1), lambda: None)
    assert sorted(p.name for p in directory.iterdir()) == [
        "000001-ann@example.com.eml",
        "manifest.csv",
    ]


def test_a_manifest_that_cannot_be_written_aborts(tmp_path: Path) -> None:
    (tmp_path / "outbox" / "manifest.csv").mkdir(parents=True)
    with pytest.raises(RunAborted, match="manifest.csv: Is a directory"):
        Outbox(tmp_path / "outbox").open()


def test_a_full_disk_aborts_without_a_partial_file(tmp_path: Path) -> None:
    # RLIMIT_FSIZE fails writes past the limit as a full disk would, in a child process only.
    child = """
import resource, signal, sys
from pathlib import Path
from batchmail.errors import RunAborted
from batchmail.outbox import Outbox
from batchmail.outcomes import ComposedMessage, Envelope

outbox = Outbox(Path(sys.argv[1]))
outbox.open()
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.RLIM_INFINITY))
big = ComposedMessage(1, "ann@example.com", Envelope("a@x", ("ann@example.com",)), "<1@x>",
                      (b"x" * 200_000,))
try:
    outbox.send(big, lambda: None)
except RunAborted as exc:
    print(exc)
    sys.exit(0)
sys.exit(1)
"""
    directory = tmp_path / "outbox"
    result = subprocess.run(
        [sys.executable, "-c", child, str(directory)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    eml = directory / "000001-ann@example.com.eml"
    assert result.stdout.strip() == f"cannot write the dry-run outbox {eml}: File too large"
    assert sorted(p.name for p in directory.iterdir()) == ["manifest.csv"]

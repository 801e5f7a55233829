"""The dry-run transport: each message becomes an ``.eml`` file and a row of ``manifest.csv``.

It offers the same ``connect``/``send``/``close`` as ``smtp.SmtpSession`` so the runner
does not know which one it holds, and it writes exactly the bytes that would be sent.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType

from batchmail import spreadsheet
from batchmail.errors import RunAborted
from batchmail.outcomes import ComposedMessage, Outcome, Status
from batchmail.private_files import make_private_dir
from batchmail.transport import Answered, BeforeData, CarryOn, send_one_by_one

MANIFEST_NAME = "manifest.csv"
MANIFEST_HEADER = (
    "row",
    "key",
    "file",
    "envelope_sender",
    "envelope_recipients",
    "message_id",
)
# Longest part of a file name taken from the key: keeps names readable and well under
# the usual 255-byte limit.
SAFE_KEY_LENGTH = 60
_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]")
_EML_NAME = re.compile(r"[0-9]{6,}-[A-Za-z0-9._@+-]*\.eml")  # what eml_name gives
# Temporary files start with this so a run killed mid-write can have its leftovers removed.
_TEMP_PREFIX = ".partial-"


def eml_name(row_number: int, key: str) -> str:
    """``000042-ann@example.com.eml``: sortable by row, and never a path outside the outbox.

    Every character outside [A-Za-z0-9._@+-] becomes "_", so no "/" survives, and the
    row prefix keeps the name from being "." or "..".
    """
    return f"{row_number:06d}-{_UNSAFE.sub('_', key)[:SAFE_KEY_LENGTH]}.eml"


class Outbox:
    """A directory of ``.eml`` files with a ``manifest.csv`` listing them in send order."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._manifest: io.FileIO | None = None
        self._started = False  # whether this object already began the manifest

    @property
    def connected(self) -> bool:
        return self._manifest is not None

    def connect(self) -> None:
        """The SmtpSession's name for ``open``."""
        self.open()

    def open(self) -> None:
        """Create the directory and start a fresh manifest. An earlier dry run's manifest is
        replaced, and the files it listed are removed first, so that the directory holds one
        run's output; any other file in it is left alone.

        Opening again after ``close`` appends: the runner closes and reconnects its
        transport every ``max_per_session`` messages, and the manifest must keep them all.
        """
        if self._manifest is not None:
            return
        manifest_path = self.directory / MANIFEST_NAME
        with _aborting(self.directory):
            make_private_dir(self.directory)
            for leftover in self.directory.glob(_TEMP_PREFIX + "*"):
                leftover.unlink()
        with _aborting(manifest_path):
            if not self._started:
                for listed in _listed_files(manifest_path):
                    listed.unlink(missing_ok=True)
                _replace_with_empty(manifest_path)
            # Unbuffered: each row goes to the file as it is appended (see _append).
            self._manifest = io.FileIO(manifest_path, "a")
        if not self._started:
            self._append(MANIFEST_HEADER)
            self._started = True

    @property
    def window(self) -> int:
        return 64  # no server to wait for: batches only save the runner's bookkeeping

    def send_batch(
        self,
        messages: Sequence[ComposedMessage],
        before_data: BeforeData,
        answered: Answered | None = None,
        carry_on: CarryOn | None = None,
    ) -> list[Outcome]:
        return send_one_by_one(self, messages, before_data, answered, carry_on)

    def send(self, message: ComposedMessage, before_data: Callable[[], None]) -> Outcome:
        """Write the message's bytes to their own file and list it in the manifest."""
        if self._manifest is None:
            raise ValueError(f"the outbox {self.directory} is not open")
        name = eml_name(message.row_number, message.key)
        # Same protocol as the SMTP session: the journal hears of it before the data goes out.
        before_data()
        self._write_atomically(self.directory / name, message.parts)
        envelope = message.envelope
        row = (message.row_number, message.key, name, envelope.mail_from)
        self._append((*row, " ".join(envelope.rcpt_tos), message.message_id))
        return Outcome(Status.SENT, 250, f"written to {name}")

    def close(self) -> None:
        manifest, self._manifest = self._manifest, None
        if manifest is not None:
            with _aborting(self.directory / MANIFEST_NAME):
                manifest.close()

    def __enter__(self) -> Outbox:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _write_atomically(self, path: Path, parts: Sequence[bytes]) -> None:
        """Write to a temporary name, then rename: a kill never leaves half a file under ``path``.
        Part by part: a large attachment is written from the one copy the run holds.

        No fsync: a dry run guards against an interrupted process, not a power cut.
        """
        with _aborting(path):
            # mkstemp's owner-only mode is kept: the files hold recipients' personal data.
            descriptor, temporary = tempfile.mkstemp(dir=self.directory, prefix=_TEMP_PREFIX)
            try:
                with open(descriptor, "wb") as file:
                    file.writelines(parts)
                os.replace(temporary, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
                raise

    def _append(self, row: tuple[object, ...]) -> None:
        """Write one row straight to the file, so a killed dry run still lists every file it
        wrote; a row the disk has no room for is cut off whole, never left half written."""
        manifest = self._manifest
        assert manifest is not None
        line = io.StringIO()
        csv.writer(line).writerow(spreadsheet.row(row))  # people open it in a spreadsheet
        data = memoryview(line.getvalue().encode("utf-8"))
        with _aborting(self.directory / MANIFEST_NAME):
            end = manifest.seek(0, os.SEEK_END)
            try:
                while data:
                    data = data[manifest.write(data) :]
            except OSError:
                with contextlib.suppress(OSError):
                    manifest.truncate(end)
                raise


def _replace_with_empty(path: Path) -> None:
    """A new, empty, owner-only file (it lists recipients' addresses) renamed over ``path``:
    the old file is replaced, never truncated, so a file it is a hard link of keeps its
    content. Rows are appended to it as messages are written, so a killed dry run's
    manifest still lists every file it wrote."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=_TEMP_PREFIX)
    os.close(descriptor)
    try:
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _listed_files(manifest_path: Path) -> Iterator[Path]:
    """The .eml files an earlier dry run's manifest lists, beside it. Only a plain file name
    of the form ``eml_name`` gives is taken, so a damaged or edited manifest cannot name
    a file anywhere else."""
    try:
        handle = manifest_path.open(encoding="utf-8", errors="replace", newline="")
    except FileNotFoundError:
        return
    with handle:
        try:
            names = [row.get("file") or "" for row in csv.DictReader(handle)]
        except csv.Error:  # not a manifest we wrote: nothing in it is taken as ours
            return
    for name in names:
        path = manifest_path.parent / name
        if _EML_NAME.fullmatch(name) and path.is_file() and not path.is_symlink():
            yield path


@contextlib.contextmanager
def _aborting(path: Path) -> Iterator[None]:
    """Turn a filesystem failure (disk full, read-only, permission) into RunAborted."""
    try:
        yield
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise RunAborted(f"cannot write the dry-run outbox {path}: {reason}") from exc

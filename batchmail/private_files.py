"""Files and directories that hold recipients' personal data: owner-only, and written whole.

The state directory ``.batchmail/<name>/`` (and ``.batchmail/`` above it), an outbox and the
reports are created for the owner alone (0700, 0600), whatever the umask. A report is
written to a temporary file beside its target and renamed over it at the end: a failure
halfway leaves the earlier file as it was, and the file a hard link shares with it is never
truncated.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TextIO, TypeVar

_Result = TypeVar("_Result")


def make_private_dir(path: Path) -> None:
    """Create ``path`` and each missing directory above it, owner-only (0700); a directory
    that exists already is left as it is. Raises OSError."""
    missing: list[Path] = []
    for directory in (path, *path.parents):
        if directory.is_dir():
            break
        missing.append(directory)
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile
            directory.mkdir(mode=0o700)


def write_whole(path: Path, write: Callable[[TextIO], _Result]) -> _Result:
    """Call ``write`` with a text file (UTF-8, no newline translation) that becomes ``path``
    once ``write`` returns: a temporary file, owner-only, synced, renamed into place.
    Raises OSError."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with open(descriptor, "w", encoding="utf-8", newline="") as handle:
            result = write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return result

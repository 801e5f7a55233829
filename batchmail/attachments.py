"""Attachment files: read one into a MIME part, and keep a templated path inside the
directories it may pick from.

A static attachment (a path without template syntax) is read and base64-encoded once
per run: ``AttachmentPart`` keeps the part and, for the fast path, its serialized bytes.
"""

from __future__ import annotations

import base64
import codecs
import hashlib
import io
import mimetypes
import os.path
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from email.message import MIMEPart
from functools import cached_property
from pathlib import Path

from batchmail.addresses import HeaderError, check_header_value
from batchmail.headers import POLICY
from batchmail.wire import has_dot_lines, wire_problem

_COMPRESSED_TYPES = {"gzip": "application/gzip", "bzip2": "application/x-bzip2"}


@dataclass(frozen=True)
class AttachmentPart:
    """One attachment, encoded: its bytes as the generator writes them inside a message
    (the fast path sends them as they are), and the part for the email package."""

    made: MIMEPart  # the part; see ``payload_later``
    wire: bytes
    content_id: str = ""  # an inline image's Content-ID, without the angle brackets
    dot_lines: bool = True  # whether a line of ``wire`` begins with a dot (see has_dot_lines)
    # The part was made without its payload, which ``wire`` holds: it is put in when the
    # reference path first asks (see ``part``), so a large file is held once, as ``wire``.
    payload_later: bool = False

    @cached_property
    def part(self) -> MIMEPart:
        """The part for the email package; its generator writes ``wire`` again."""
        if self.payload_later:
            body = self.wire.partition(b"\r\n\r\n")[2]
            # As set_content leaves it: "\n" line ends, which the generator writes as CRLF.
            self.made.set_payload(body.replace(b"\r\n", b"\n").decode("ascii"))
        return self.made


# Bytes read and encoded at a time: whole base64 lines (57 bytes make 76 characters).
_CHUNK = 57 * 16384


def read_part(path: Path, filename: str) -> AttachmentPart | str:
    """The attachment for ``path``, named ``filename``, or why it cannot be made."""

    def make() -> AttachmentPart | str:
        content_type, encoding = mimetypes.guess_type(filename)
        if encoding:  # e.g. .tar.gz: what is sent is the compressed file
            content_type = _COMPRESSED_TYPES.get(encoding)
        maintype, subtype = (content_type or "application/octet-stream").split("/", 1)
        params = None
        if maintype == "text":
            # Readers need a text part's charset to show it. UTF-8 (ASCII included) is
            # said; other text, whose charset cannot be told from its bytes, goes as a
            # file of bytes.
            if _is_utf8(path):
                params = {"charset": "utf-8"}
            else:
                maintype, subtype = "application", "octet-stream"
        return _part(path, maintype, subtype, filename, "attachment", None, params)

    return _reading(path, filename, make)


def read_inline_image(path: Path, filename: str) -> AttachmentPart | str:
    """The inline image for ``path`` (Content-Disposition: inline, a Content-ID derived
    from its bytes, so the same image has the same Content-ID in every message), or why
    it cannot be made."""
    content_type, encoding = mimetypes.guess_type(filename)
    if encoding or not content_type or not content_type.startswith("image/"):
        return f"{filename!r} is not an image (by its name: .png, .jpg, .gif, .svg...)"
    maintype, subtype = content_type.split("/", 1)

    def make() -> AttachmentPart | str:
        digest = hashlib.sha256()
        for chunk in _chunks(path):
            digest.update(chunk)
        content_id = f"{digest.hexdigest()[:32]}@batchmail"
        return _part(path, maintype, subtype, filename, "inline", content_id)

    return _reading(path, filename, make)


def _reading(
    path: Path, filename: str, make: Callable[[], AttachmentPart | str]
) -> AttachmentPart | str:
    try:
        check_header_value("attachment file name", filename)
        return make()
    except HeaderError as exc:
        return str(exc)
    except FileNotFoundError:
        return f"file not found: {path}"
    except IsADirectoryError:
        return f"{path} is a directory, not a file"
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror}"


def _chunks(path: Path) -> Iterator[bytes]:
    """The file's bytes, a chunk at a time: a large file is never in memory whole."""
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK):
            yield chunk


def _is_utf8(path: Path) -> bool:
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        for chunk in _chunks(path):
            decoder.decode(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def _part(
    path: Path,
    maintype: str,
    subtype: str,
    filename: str,
    disposition: str,
    content_id: str | None,
    params: dict[str, str] | None = None,
) -> AttachmentPart | str:
    """The part's headers as the email package writes them (set_content of bytes: always
    base64, so the part can never contain a MIME boundary; nothing in them depends on the
    bytes), then the file encoded as it would, a chunk at a time, into one buffer that
    becomes the part's bytes without a copy (BytesIO.getvalue)."""
    part = MIMEPart(policy=POLICY)
    cid = f"<{content_id}>" if content_id else None
    part.set_content(
        b"", maintype, subtype, disposition=disposition, filename=filename, cid=cid, params=params
    )
    # A multipart's generator writes each part with a clone of itself: as_bytes with the
    # same policy gives the same bytes.
    head = part.as_bytes(policy=POLICY)
    trouble = wire_problem(head)
    if trouble or not head.endswith(b"\r\n\r\n"):
        return f"cannot encode {path}: {trouble or 'unexpected part headers'}"
    buffer = io.BytesIO()
    buffer.write(head)
    for chunk in _chunks(path):
        # base64 in 76-character lines, CRLF-ended: never scanned again for long lines.
        buffer.write(base64.encodebytes(chunk).replace(b"\n", b"\r\n"))
    wire = buffer.getvalue()
    return AttachmentPart(part, wire, content_id or "", has_dot_lines(head), len(wire) > len(head))


# Jinja's delimiters: a pattern's literal prefix ends where the first of them begins.
_TEMPLATE_SYNTAX = ("{{", "{%", "{#")

# The state directory's name (``.batchmail/<name>/`` beside a campaign file: the journal,
# the outbox, the sink): a path chosen by the CSV never leads into one.
STATE_DIR_NAME = ".batchmail"


def attachment_root(directory: Path, source: str) -> Path:
    """The directory a templated path may pick files from: the one its literal prefix names
    (the longest leading part without template syntax, up to its last "/":
    ``files/{{ file }}`` picks in files/, ``../invoices/{{ id }}.pdf`` in ../invoices/), or
    the campaign's directory for a pattern without one (``{{ file }}``)."""
    cut = min((i for i in map(source.find, _TEMPLATE_SYNTAX) if i >= 0), default=len(source))
    prefix = os.path.dirname(source[:cut])
    return (directory / prefix).resolve() if prefix else directory.resolve()


@dataclass(frozen=True)
class ProtectedFiles:
    """The campaign's own files (the campaign file, the recipients, the templates, the
    exclusion lists) and state directories: a path chosen by a CSV value never leads to
    them, whatever the template looks like. Known by resolved path, and by device and
    inode, so that a hard link to one is refused too."""

    names: dict[Path, str]  # resolved path -> how the user knows the file
    inodes: dict[tuple[int, int], str]
    state_dirs: tuple[Path, ...] = ()  # resolved

    @classmethod
    def of(
        cls, files: Iterable[tuple[str, Path]], state_dirs: Iterable[Path] = ()
    ) -> ProtectedFiles:
        """``files``: (label, path) pairs; a file that does not exist protects nothing."""
        names: dict[Path, str] = {}
        inodes: dict[tuple[int, int], str] = {}
        for label, path in files:
            try:
                real = path.resolve()
                status = real.stat()
            except (OSError, RuntimeError, ValueError):
                continue
            names.setdefault(real, label)
            inodes.setdefault((status.st_dev, status.st_ino), label)
        return cls(names, inodes, tuple(d.resolve() for d in state_dirs))

    def refusal(self, real: Path, root: Path) -> str | None:
        """What ``real`` (resolved, inside ``root``) is, if it is one of these files."""
        below = real.relative_to(root).parts if real.is_relative_to(root) else real.parts
        if STATE_DIR_NAME in below or any(real.is_relative_to(d) for d in self.state_dirs):
            return f"in batchmail's state directory ({STATE_DIR_NAME}/)"
        if real in self.names:
            return self.names[real]
        try:
            status = real.stat()
        except OSError:
            return None  # nothing there: reading it says so
        return self.inodes.get((status.st_dev, status.st_ino))


NOTHING_PROTECTED = ProtectedFiles({}, {})


def confined_path(
    directory: Path, rendered: str, root: Path, protected: ProtectedFiles = NOTHING_PROTECTED
) -> Path | str:
    """The real path of a file chosen by the CSV, inside ``root`` (resolved) and none of
    the ``protected`` files, or why it is refused."""
    if not rendered.strip():
        return "renders to an empty path"
    try:
        check_header_value("attachment path", rendered)
    except HeaderError as exc:
        return str(exc)
    if Path(rendered).is_absolute():
        return f"renders to the absolute path {rendered!r}; it must be relative"
    if "//" in rendered:  # "files/{{ file }}" with a value "/etc/passwd"
        return f"renders to {rendered!r}: a value is an absolute path, or empty"
    candidate = directory / rendered
    try:
        real = candidate.resolve()  # symlinks resolved: a link cannot lead outside
    except (OSError, RuntimeError, ValueError) as exc:
        return f"cannot resolve {candidate}: {exc}"
    if not real.is_relative_to(root):
        inside = "the campaign's directory" if root == directory.resolve() else "the directory"
        return f"{rendered!r} leaves {inside} {root}{os.sep}"
    own = protected.refusal(real, root)
    if own is not None:
        return f"{rendered!r} is {own}: the campaign's own files are never attached"
    return real

"""Attachment files: read one into a MIME part, and keep a templated path inside the
directories it may pick from.

A static attachment (a path without template syntax) is read and base64-encoded once
per run: ``AttachmentPart`` keeps the part and, for the fast path, its serialized bytes.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os.path
from dataclasses import dataclass
from email.message import MIMEPart
from pathlib import Path

from batchmail.addresses import HeaderError, check_header_value
from batchmail.headers import POLICY
from batchmail.wire import has_dot_lines, wire_problem

_COMPRESSED_TYPES = {"gzip": "application/gzip", "bzip2": "application/x-bzip2"}


@dataclass(frozen=True)
class AttachmentPart:
    """One attachment, encoded: the part (for the email package) and its bytes as the
    generator writes them inside a message (for the fast path)."""

    part: MIMEPart
    wire: bytes
    content_id: str = ""  # an inline image's Content-ID, without the angle brackets
    dot_lines: bool = True  # whether a line of ``wire`` begins with a dot (see has_dot_lines)


def read_part(path: Path, filename: str) -> AttachmentPart | str:
    """The attachment for ``path``, named ``filename``, or why it cannot be made."""
    content = _read(path, filename)
    if isinstance(content, str):
        return content
    content_type, encoding = mimetypes.guess_type(filename)
    if encoding:  # e.g. .tar.gz: what is sent is the compressed file
        content_type = _COMPRESSED_TYPES.get(encoding)
    maintype, subtype = (content_type or "application/octet-stream").split("/", 1)
    return _part(path, content, maintype, subtype, filename, "attachment", None)


def read_inline_image(path: Path, filename: str) -> AttachmentPart | str:
    """The inline image for ``path`` (Content-Disposition: inline, a Content-ID derived
    from its bytes, so the same image has the same Content-ID in every message), or why
    it cannot be made."""
    content_type, encoding = mimetypes.guess_type(filename)
    if encoding or not content_type or not content_type.startswith("image/"):
        return f"{filename!r} is not an image (by its name: .png, .jpg, .gif, .svg...)"
    content = _read(path, filename)
    if isinstance(content, str):
        return content
    content_id = f"{hashlib.sha256(content).hexdigest()[:32]}@batchmail"
    maintype, subtype = content_type.split("/", 1)
    return _part(path, content, maintype, subtype, filename, "inline", content_id)


def _read(path: Path, filename: str) -> bytes | str:
    try:
        check_header_value("attachment file name", filename)
        return path.read_bytes()
    except HeaderError as exc:
        return str(exc)
    except FileNotFoundError:
        return f"file not found: {path}"
    except IsADirectoryError:
        return f"{path} is a directory, not a file"
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror}"


def _part(
    path: Path,
    content: bytes,
    maintype: str,
    subtype: str,
    filename: str,
    disposition: str,
    content_id: str | None,
) -> AttachmentPart | str:
    part = MIMEPart(policy=POLICY)
    # Bytes content: always base64, so the part can never contain a MIME boundary.
    cid = f"<{content_id}>" if content_id else None
    part.set_content(
        content, maintype, subtype, disposition=disposition, filename=filename, cid=cid
    )
    # A multipart's generator writes each part with a clone of itself: as_bytes with the
    # same policy gives the same bytes.
    wire = part.as_bytes(policy=POLICY)
    trouble = wire_problem(wire)
    if trouble:  # base64 in 76-character lines: not expected, but never sent unchecked
        return f"cannot encode {path}: {trouble}"
    return AttachmentPart(part, wire, content_id or "", has_dot_lines(wire))


def allowed_roots(directory: Path, source: str) -> tuple[Path, ...]:
    """Where a templated path may lead: the campaign's directory, or the directory its
    literal prefix names ("../invoices/{{ id }}.pdf" may pick files in ../invoices/)."""
    roots = [directory.resolve()]
    prefix = os.path.dirname(source.split("{", 1)[0])
    if prefix:
        roots.append((directory / prefix).resolve())
    return tuple(roots)


def confined_path(directory: Path, rendered: str, roots: tuple[Path, ...]) -> Path | str:
    """The real path of a file chosen by the CSV, or why it is refused."""
    if not rendered.strip():
        return "renders to an empty path"
    try:
        check_header_value("attachment path", rendered)
    except HeaderError as exc:
        return str(exc)
    if Path(rendered).is_absolute():
        return f"renders to the absolute path {rendered!r}; it must be relative"
    candidate = directory / rendered
    try:
        real = candidate.resolve()  # symlinks resolved: a link cannot lead outside
    except (OSError, RuntimeError, ValueError) as exc:
        return f"cannot resolve {candidate}: {exc}"
    if not any(real.is_relative_to(root) for root in roots):
        allowed = " or ".join(str(root) for root in roots)
        return f"{rendered!r} leaves the campaign's directory (allowed: {allowed})"
    return real

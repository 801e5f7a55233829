"""Rendered fields and attachments in, envelope and message bytes out.

The header values are validated by ``batchmail.fields`` (line breaks, control
characters, strict addresses, CSV values that cannot add address structure); the
envelope comes from the same parsed addresses, never from re-reading headers.

The bytes come from ``mime_fast`` when this interpreter's email package agrees with it,
else (and for SMTPUTF8 messages) from ``mime_reference``; either way every header is
read back (``headers.check_header_block``) and a row whose headers would not reach
readers as written is refused, naming the row and the field. The output is
deterministic for the same inputs and date (fixed MIME boundaries, a Message-ID derived
from the campaign's id, see ``campaign_id``, and the recipient's key), so the bytes of a
dry run are the bytes that would be sent.
"""

from __future__ import annotations

import contextlib
import email.errors
import hashlib
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from urllib.parse import unquote, urlsplit

from batchmail import mime_fast
from batchmail.attachments import (
    STATE_DIR_NAME,
    AttachmentPart,
    ProtectedFiles,
    attachment_root,
    confined_path,
    read_inline_image,
    read_part,
)
from batchmail.bodies import local_images, with_sources
from batchmail.campaign import Campaign
from batchmail.clock import email_date
from batchmail.errors import CampaignError, Problem
from batchmail.fields import (
    address_headers,
    extra_headers,
    header_name_problems,
    listed,
    parse_addresses,
    unstructured,
    unsubscribe_headers,
)
from batchmail.headers import Header, check_header_block
from batchmail.mime_reference import Content, reference_bytes
from batchmail.outcomes import ComposedMessage, Envelope
from batchmail.recipients import Recipient
from batchmail.render import RenderedFields, Renderer, template_variables
from batchmail.wire import has_dot_lines, wire_problem


class Composer:
    """Turns one recipient's rendered fields into a ComposedMessage.

    Holds nothing per row: only the campaign's static attachments, read and encoded once."""

    def __init__(
        self,
        campaign: Campaign,
        static_parts: dict[int, AttachmentPart],
        attachment_roots: dict[int, tuple[Path, tuple[str, ...]]],  # and variables used
        fast: bool,
        protected: ProtectedFiles,
    ) -> None:
        self._campaign = campaign
        self._csv_name = campaign.recipients.file.name
        self._static_parts = static_parts
        self._attachment_roots = attachment_roots
        self._protected = protected
        self._fast = fast
        self._image_root = campaign.directory.resolve()
        # Bounded: images that differ per row are read each time, memory stays flat.
        self._read_image = lru_cache(maxsize=_IMAGE_CACHE)(_read_image)

    @property
    def shared_parts(self) -> tuple[bytes, ...]:
        """The static attachments' bytes as every message carries them, in campaign order."""
        return tuple(self._static_parts[index].wire for index in sorted(self._static_parts))

    @property
    def uses_fast_path(self) -> bool:
        """Whether ASCII messages are written by ``mime_fast`` (else all by the reference)."""
        return self._fast

    @classmethod
    def prepare(cls, campaign: Campaign, renderer: Renderer, *, fast: bool = True) -> Composer:
        """Check the extra header names and read every static attachment once; raise
        CampaignError listing every problem. ``fast=False`` always takes the reference
        path (the email package's EmailMessage)."""
        problems = header_name_problems(campaign)
        static: dict[int, AttachmentPart] = {}
        roots: dict[int, tuple[Path, tuple[str, ...]]] = {}
        directory = campaign.directory
        for index, source in enumerate(campaign.message.attachments):
            if not renderer.is_static_attachment(index):
                roots[index] = (attachment_root(directory, source), template_variables(source))
                continue
            # The author wrote this path: it may point anywhere, e.g. ../shared/guide.pdf.
            part = read_part(directory / source, Path(source).name)
            if isinstance(part, str):
                where = campaign.where(f"message.attachments[{index}]")
                problems.append(Problem(where, f"{source}: {part}"))
            else:
                static[index] = part
        if problems:
            raise CampaignError(problems)
        fast = fast and mime_fast.writes_like_reference()
        return cls(campaign, static, roots, fast, own_files(campaign))

    def compose(
        self, recipient: Recipient, rendered: RenderedFields, *, date: datetime | None = None
    ) -> ComposedMessage:
        """The message for one row; raise CampaignError with every problem of the row."""
        row = f"{self._csv_name}, row {recipient.row_number}"
        problems: list[Problem] = []
        addresses = parse_addresses(rendered, row, problems)
        subject = unstructured("Subject", rendered.subject, f"{row}, message.subject", problems)
        extra = extra_headers(rendered, row, problems)
        unsubscribe = unsubscribe_headers(self._campaign, rendered, row, problems)
        attachments = [
            self._attachment(index, path, row, recipient.fields, problems)
            for index, path in enumerate(rendered.attachments)
        ]
        html, images = self._inline_images(rendered.html, row, problems)
        if problems or subject is None:  # no subject: its problem is in problems
            raise CampaignError(problems)
        sender = addresses["from_"][0]
        seed = self._campaign.message_id_seed or self._campaign.name
        message_id = _message_id(seed, recipient.key, sender.addr_spec)
        date_value = email_date(date or datetime.now(UTC).astimezone())
        headers = (*address_headers(addresses), Header("Subject", subject, "message.subject"))
        headers += (
            Header("Date", date_value, "date"),
            Header("Message-ID", message_id, "message.from"),
            Header("MIME-Version", "1.0", "message"),
            *unsubscribe,
            *extra,
        )
        utf8 = any(not a.addr_spec.isascii() for h in headers for a in listed(h))
        content = Content(
            headers,
            rendered.text,
            html,
            tuple(a for a in attachments if a is not None),
            message_id,
            utf8,
            images,
        )
        parts, dot_lines = self._bytes(content, row)
        recipients = addresses["to"] + addresses["cc"] + addresses["bcc"]
        rcpt_tos = _unique(a.addr_spec for a in recipients)
        # The To addresses come first, and _unique keeps the first spelling of each.
        to = rcpt_tos[: len(_unique(a.addr_spec for a in addresses["to"]))]
        envelope = Envelope(sender.addr_spec, rcpt_tos, to)
        return ComposedMessage(
            recipient.row_number,
            recipient.key,
            envelope,
            message_id,
            parts,
            # wire_problem below found no bare CR or LF in the message's own bytes, nor
            # read_part in the attachments'; the MIME structure between them is CRLF.
            crlf_only=parts[-1].endswith(b"\r\n"),
            dot_lines=dot_lines,
        )

    def _bytes(self, content: Content, row: str) -> tuple[tuple[bytes, ...], bool]:
        """The message's parts (see ``ComposedMessage.parts``), once they are shown to carry
        every header as meant; and whether a line of them begins with a dot (told without
        scanning the attachments again: they were scanned once, when they were read)."""
        try:
            if self._fast and not content.utf8:
                parts, own = mime_fast.write_parts(content)
            else:
                own = reference_bytes(content)
                parts = (own,)
        except (ValueError, TypeError, email.errors.MessageError) as exc:
            raise CampaignError([Problem(row, f"cannot build the message: {exc}")]) from exc
        problems = [
            Problem(f"{row}, {key}" if key != "message" else row, trouble)
            for key, trouble in check_header_block(parts[0], content.headers, content.utf8)
        ]
        if problems:  # each names its field; the check below would only repeat them
            raise CampaignError(problems)
        # Attachments were checked when they were read: a large file is not scanned again
        # for every row.
        trouble = wire_problem(own, content.utf8)
        if trouble:
            raise CampaignError([Problem(row, trouble)])
        read = (*content.attachments, *content.images)
        return parts, has_dot_lines(own) or any(part.dot_lines for part in read)

    def _inline_images(
        self, html: str | None, row: str, problems: list[Problem]
    ) -> tuple[str | None, tuple[AttachmentPart, ...]]:
        """The HTML with every relative <img src> turned into cid:, and the images."""
        found = local_images(html) if html is not None else []
        if html is None or not found:
            return html, ()
        key = "message.markdown" if self._campaign.message.markdown else "message.html"
        by_source: dict[str, str] = {}
        images: dict[str, AttachmentPart] = {}  # by Content-ID: each image once
        for _, _, src in found:
            if src in by_source:
                continue
            part = self._image(src)
            if isinstance(part, str):
                problems.append(Problem(f"{row}, {key}", f"image {src!r}: {part}"))
                continue
            by_source[src] = f"cid:{part.content_id}"
            images.setdefault(part.content_id, part)
        return with_sources(html, found, by_source), tuple(images.values())

    def _image(self, src: str) -> AttachmentPart | str:
        """The image file an <img src> names: inside the campaign's directory, read and
        encoded once while it stays in the cache (a logo on every row: once per run)."""
        path = unquote(urlsplit(src.strip()).path)
        real = confined_path(self._campaign.directory, path, self._image_root, self._protected)
        if isinstance(real, str):
            return real
        return self._read_image(real)

    def _attachment(
        self,
        index: int,
        rendered: str,
        row: str,
        fields: Mapping[str, str],
        problems: list[Problem],
    ) -> AttachmentPart | None:
        if index in self._static_parts:
            return self._static_parts[index]
        source = self._campaign.message.attachments[index]
        where = f"{row}, message.attachments[{index}]"
        root, variables = self._attachment_roots[index]
        columns = [name for name in variables if name in fields]
        named = f"column{'s' * (len(columns) > 1)} {', '.join(columns)}" if columns else ""
        # The key path's 0-based index names the entry: no second, 1-based number beside it.
        label = f"{source}{f' ({named})' if named else ''}"
        path = confined_path(self._campaign.directory, rendered, root, self._protected)
        part = path if isinstance(path, str) else read_part(path, Path(rendered).name)
        if isinstance(part, str):
            problems.append(Problem(where, f"{label}: {part}"))
            return None
        return part


_IMAGE_CACHE = 32


def own_files(campaign: Campaign) -> ProtectedFiles:
    """The files a CSV value may never attach: the campaign's inputs, and the files at the
    top of its state directory (the journal and its logs: a hard link to one is refused
    too; a path into the directory itself is refused by its name)."""
    message = campaign.message
    templates = {"text": message.text, "html": message.html, "markdown": message.markdown}
    files = [
        (f"the campaign file {campaign.path.name}", campaign.path),
        (f"the recipients file {campaign.recipients.file.name}", campaign.recipients.file),
        *(
            (f"the template {path.name} (message.{key})", campaign.directory / path)
            for key, path in templates.items()
            if path is not None
        ),
        *((f"the exclusion list {path.name}", path) for path in campaign.recipients.exclude),
    ]
    state = f"in batchmail's state directory ({STATE_DIR_NAME}/)"
    with contextlib.suppress(OSError):  # no state directory yet
        files += [(state, path) for path in campaign.state_dir.iterdir() if path.is_file()]
    return ProtectedFiles.of(files, (campaign.directory / STATE_DIR_NAME,))


def _read_image(path: Path) -> AttachmentPart | str:
    return read_inline_image(path, path.name)


def _message_id(seed: str, key: str, sender: str) -> str:
    """Stable across runs for the same campaign id (``campaign_id``) and key, different for
    different keys and campaigns."""
    digest = hashlib.sha256(f"{seed}\0{key}".encode()).hexdigest()[:32]
    return f"<{digest}.batchmail@{sender.rpartition('@')[2]}>"


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    """De-duplicated in order; domains compare case-insensitively, local parts do not."""
    seen: dict[str, str] = {}
    for item in items:
        local, _, domain = item.rpartition("@")
        seen.setdefault(f"{local}@{domain.lower()}", item)
    return tuple(seen.values())

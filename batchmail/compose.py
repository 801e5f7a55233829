"""Rendered fields and attachments in, envelope and message bytes out.

Every rendered header value is checked for line breaks and control characters before
the email package sees it; address headers are built from strictly parsed addresses,
never from raw strings; the envelope comes from the same parsed addresses, never from
re-reading headers. The output is deterministic for the same inputs and date (fixed
MIME boundaries, a Message-ID derived from the campaign name and the recipient's key),
so the bytes of a dry run are the bytes that would be sent.
"""

from __future__ import annotations

import email.errors
import email.policy
import hashlib
import mimetypes
import os.path
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from email.headerregistry import Address as HeaderAddress
from email.message import EmailMessage, MIMEPart
from email.utils import format_datetime
from pathlib import Path

from batchmail.addresses import (
    Address,
    AddressError,
    HeaderError,
    ascii_addr_spec,
    check_header_name,
    check_header_value,
    parse_address_list,
)
from batchmail.campaign import Campaign
from batchmail.errors import CampaignError, Problem
from batchmail.outcomes import ComposedMessage, Envelope
from batchmail.recipients import Recipient
from batchmail.render import RenderedFields, Renderer

# policy.SMTP writes short-lined UTF-8 bodies as raw 8bit; 7bit makes the email package
# pick quoted-printable or base64 instead, so every byte sent is ASCII.
POLICY = email.policy.SMTP.clone(cte_type="7bit")

# Headers this module writes itself; an extra header with one of these names would
# duplicate or contradict them. (The email package also treats "Orig-Date" as a Date.)
_STRUCTURAL = frozenset(
    {"from", "to", "cc", "bcc", "reply-to", "subject", "date", "orig-date", "message-id"}
    | {"mime-version"}
)
_STRUCTURAL_PREFIXES = ("content-", "resent-")
# The email package decodes these while storing a header value, so a CSV value could
# smuggle in text (even line breaks) that was never checked.
_ENCODED_WORD = re.compile(r"=\?[^?\s]*\?[bBqQ]\?[^?\s]*\?=")
# (RenderedFields attribute, campaign key, header name) of the address fields.
_ADDRESS_FIELDS = (
    ("from_", "message.from", "From"),
    ("to", "message.to", "To"),
    ("cc", "message.cc", "Cc"),
    ("bcc", "message.bcc", "Bcc"),
    ("reply_to", "message.reply_to", "Reply-To"),
)
_MAX_LINE = 998  # RFC 5322 2.1.1, without the CRLF
_COMPRESSED_TYPES = {"gzip": "application/gzip", "bzip2": "application/x-bzip2"}


class Composer:
    """Turns one recipient's rendered fields into a ComposedMessage.

    Holds nothing per row: only the campaign's static attachments, read once."""

    def __init__(
        self,
        campaign: Campaign,
        static_parts: dict[int, MIMEPart],
        attachment_roots: dict[int, tuple[Path, ...]],
    ) -> None:
        self._campaign = campaign
        self._csv_name = campaign.recipients.file.name
        self._static_parts = static_parts
        self._attachment_roots = attachment_roots

    @classmethod
    def prepare(cls, campaign: Campaign, renderer: Renderer) -> Composer:
        """Check the extra header names and read every static attachment once;
        raise CampaignError listing every problem."""
        problems = _header_name_problems(campaign)
        static: dict[int, MIMEPart] = {}
        roots: dict[int, tuple[Path, ...]] = {}
        directory = campaign.directory
        for index, source in enumerate(campaign.message.attachments):
            if not renderer.is_static_attachment(index):
                roots[index] = _allowed_roots(directory, source)
                continue
            # The author wrote this path: it may point anywhere, e.g. ../shared/guide.pdf.
            path = directory / source
            part = _read_part(path, Path(source).name)
            if isinstance(part, str):
                where = campaign.where("message.attachments")
                problems.append(Problem(where, f"attachment {index + 1} ({source}): {part}"))
            else:
                static[index] = part
        if problems:
            raise CampaignError(problems)
        return cls(campaign, static, roots)

    def compose(
        self, recipient: Recipient, rendered: RenderedFields, *, date: datetime | None = None
    ) -> ComposedMessage:
        """The message for one row; raise CampaignError with every problem of the row."""
        row = f"{self._csv_name}, row {recipient.row_number}"
        problems: list[Problem] = []
        addresses = self._addresses(rendered, row, problems)
        _check_value("Subject", rendered.subject, f"{row}, message.subject", problems)
        headers = self._extra_headers(rendered, row, problems)
        parts = [
            self._attachment(index, path, row, problems)
            for index, path in enumerate(rendered.attachments)
        ]
        if problems:
            raise CampaignError(problems)
        sender = addresses["from_"][0]
        message_id = _message_id(self._campaign.name, recipient.key, sender.addr_spec)
        msg = EmailMessage(policy=POLICY)
        try:
            _write_headers(msg, addresses, rendered.subject, headers, date, message_id)
            _write_body(msg, rendered, [p for p in parts if p is not None], message_id)
            data = msg.as_bytes(policy=POLICY)
        except (ValueError, TypeError, email.errors.MessageError) as exc:
            raise CampaignError([Problem(row, f"cannot build the message: {exc}")]) from exc
        trouble = _wire_problem(data)
        if trouble:
            raise CampaignError([Problem(row, trouble)])
        recipients = addresses["to"] + addresses["cc"] + addresses["bcc"]
        envelope = Envelope(sender.addr_spec, _unique(a.addr_spec for a in recipients))
        return ComposedMessage(recipient.row_number, recipient.key, envelope, message_id, data)

    def _addresses(
        self, rendered: RenderedFields, row: str, problems: list[Problem]
    ) -> dict[str, tuple[Address, ...]]:
        """Every address field, parsed strictly, with addr-specs in their wire (ASCII) form."""
        parsed: dict[str, tuple[Address, ...]] = {}
        failed: set[str] = set()
        for field, key, header in _ADDRESS_FIELDS:
            value = getattr(rendered, field)
            try:
                check_header_value(header, value)
                parsed[field] = tuple(
                    Address(a.display_name, ascii_addr_spec(a.addr_spec))
                    for a in parse_address_list(value)
                )
            except (AddressError, HeaderError) as exc:
                problems.append(Problem(f"{row}, {key}", str(exc)))
                parsed[field] = ()
                failed.add(field)
        if len(parsed["from_"]) != 1 and "from_" not in failed:
            found = len(parsed["from_"])
            problems.append(
                Problem(
                    f"{row}, message.from",
                    f"needs exactly one address, found {found} in {rendered.from_!r}",
                )
            )
        recipients = parsed["to"] + parsed["cc"] + parsed["bcc"]
        if not recipients and not failed & {"to", "cc", "bcc"}:
            problems.append(
                Problem(f"{row}, message.to", "no recipient: to, cc and bcc are all empty")
            )
        return parsed

    def _extra_headers(
        self, rendered: RenderedFields, row: str, problems: list[Problem]
    ) -> list[tuple[str, str | HeaderAddress]]:
        headers: list[tuple[str, str | HeaderAddress]] = []
        for name, value in rendered.headers:
            where = f"{row}, message.headers.{name}"
            if not value:
                continue  # an empty value means "not for this row"
            if name.lower() == "sender":  # an address header: never hand it a raw string
                try:
                    check_header_value(name, value)
                    found = parse_address_list(value)
                    if len(found) != 1:
                        raise AddressError(f"needs exactly one address, found {len(found)}")
                    address = Address(found[0].display_name, ascii_addr_spec(found[0].addr_spec))
                    headers.append((name, _header_address(address)))
                except (AddressError, HeaderError) as exc:
                    problems.append(Problem(where, str(exc)))
            elif _check_value(name, value, where, problems):
                headers.append((name, value))
        return headers

    def _attachment(
        self, index: int, rendered: str, row: str, problems: list[Problem]
    ) -> MIMEPart | None:
        if index in self._static_parts:
            return self._static_parts[index]
        source = self._campaign.message.attachments[index]
        where = f"{row}, message.attachments[{index}]"
        label = f"attachment {index + 1} ({source})"
        path = self._templated_path(rendered, self._attachment_roots[index])
        if isinstance(path, str):
            problems.append(Problem(where, f"{label}: {path}"))
            return None
        part = _read_part(path, Path(rendered).name)
        if isinstance(part, str):
            problems.append(Problem(where, f"{label}: {part}"))
            return None
        return part

    def _templated_path(self, rendered: str, roots: tuple[Path, ...]) -> Path | str:
        """The real path of a file chosen by the CSV, or why it is refused."""
        if not rendered.strip():
            return "renders to an empty path"
        try:
            check_header_value("attachment path", rendered)
        except HeaderError as exc:
            return str(exc)
        if Path(rendered).is_absolute():
            return f"renders to the absolute path {rendered!r}; it must be relative"
        candidate = self._campaign.directory / rendered
        try:
            real = candidate.resolve()  # symlinks resolved: a link cannot lead outside
        except (OSError, RuntimeError, ValueError) as exc:
            return f"cannot resolve {candidate}: {exc}"
        if not any(real.is_relative_to(root) for root in roots):
            allowed = " or ".join(str(root) for root in roots)
            return f"{rendered!r} leaves the campaign's directory (allowed: {allowed})"
        return real


def _header_name_problems(campaign: Campaign) -> list[Problem]:
    problems: list[Problem] = []
    seen: set[str] = set()
    for name, _ in campaign.message.headers:
        where = campaign.where(f"message.headers.{name}")
        lower = name.lower()
        try:
            check_header_name(name)
        except HeaderError as exc:
            problems.append(Problem(where, str(exc)))
        if lower in _STRUCTURAL or lower.startswith(_STRUCTURAL_PREFIXES):
            problems.append(
                Problem(
                    where,
                    f"batchmail writes the {name} header itself; set it through the message "
                    "keys (from, to, cc, bcc, reply_to, subject) or remove it",
                )
            )
        elif lower in seen:
            problems.append(Problem(where, f"the {name} header is given twice"))
        seen.add(lower)
    return problems


def _allowed_roots(directory: Path, source: str) -> tuple[Path, ...]:
    """Where a templated path may lead: the campaign's directory, or the directory its
    literal prefix names ("../invoices/{{ id }}.pdf" may pick files in ../invoices/)."""
    roots = [directory.resolve()]
    prefix = os.path.dirname(source.split("{", 1)[0])
    if prefix:
        roots.append((directory / prefix).resolve())
    return tuple(roots)


def _read_part(path: Path, filename: str) -> MIMEPart | str:
    """The attachment part for ``path``, or why it cannot be made."""
    try:
        check_header_value("attachment file name", filename)
        content = path.read_bytes()
    except HeaderError as exc:
        return str(exc)
    except FileNotFoundError:
        return f"file not found: {path}"
    except IsADirectoryError:
        return f"{path} is a directory, not a file"
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror}"
    content_type, encoding = mimetypes.guess_type(filename)
    if encoding:  # e.g. .tar.gz: what is sent is the compressed file
        content_type = _COMPRESSED_TYPES.get(encoding)
    maintype, subtype = (content_type or "application/octet-stream").split("/", 1)
    part = MIMEPart(policy=POLICY)
    part.set_content(content, maintype, subtype, disposition="attachment", filename=filename)
    return part


def _check_value(name: str, value: str, where: str, problems: list[Problem]) -> bool:
    """Whether an unstructured header value is safe to store; if not, say why."""
    try:
        check_header_value(name, value)
    except HeaderError as exc:
        problems.append(Problem(where, str(exc)))
        return False
    if _ENCODED_WORD.search(value):
        problems.append(
            Problem(
                where,
                f"{value!r} contains an RFC 2047 encoded word (=?...?=) that mail readers "
                "would decode into different text",
            )
        )
        return False
    # The email package parses what it stores; refuse anything it would rewrite.
    if str(POLICY.header_factory(name, value)) != value:
        problems.append(Problem(where, f"{value!r} would not be sent as written"))
        return False
    return True


def _header_address(address: Address) -> HeaderAddress:
    return HeaderAddress(display_name=address.display_name, addr_spec=address.addr_spec)


def _message_id(campaign_name: str, key: str, sender: str) -> str:
    """Stable across runs for the same campaign and key, different for different keys."""
    digest = hashlib.sha256(f"{campaign_name}\0{key}".encode()).hexdigest()[:32]
    return f"<{digest}.batchmail@{sender.rpartition('@')[2]}>"


def _write_headers(
    msg: EmailMessage,
    addresses: dict[str, tuple[Address, ...]],
    subject: str,
    extra: list[tuple[str, str | HeaderAddress]],
    date: datetime | None,
    message_id: str,
) -> None:
    msg["From"] = _header_address(addresses["from_"][0])
    for name, field in (("To", "to"), ("Cc", "cc"), ("Reply-To", "reply_to")):
        if addresses[field]:
            msg[name] = [_header_address(a) for a in addresses[field]]
    # Bcc is deliberately absent: those recipients are in the envelope only.
    msg["Subject"] = subject
    msg["Date"] = format_datetime(date or datetime.now(UTC).astimezone())
    msg["Message-ID"] = message_id
    msg["MIME-Version"] = "1.0"
    for name, value in extra:
        msg[name] = value


def _write_body(
    msg: EmailMessage, rendered: RenderedFields, attachments: list[MIMEPart], message_id: str
) -> None:
    if rendered.text is not None:
        msg.set_content(rendered.text, subtype="plain")
    if rendered.html is not None and rendered.text is not None:
        msg.add_alternative(rendered.html, subtype="html")
    elif rendered.html is not None:
        msg.set_content(rendered.html, subtype="html")
    if attachments:
        msg.make_mixed()
        for part in attachments:
            msg.attach(part)  # static parts are shared between messages, never modified
    bodies = [body for body in (rendered.text, rendered.html) if body]
    for number, part in enumerate(msg.walk()):
        if part is not msg:
            del part["MIME-Version"]  # only the top level needs it
        if part.is_multipart():
            part.set_boundary(_boundary(message_id, number, bodies))


def _boundary(message_id: str, number: int, bodies: list[str]) -> str:
    """A fixed boundary (the email package's is random) that no body contains; base64
    and quoted-printable output cannot contain it unless the text itself does."""
    attempt = 0
    while True:
        seed = f"{message_id}\0{number}\0{attempt}".encode()
        boundary = f"bm-{hashlib.sha256(seed).hexdigest()[:40]}"
        if not any(boundary in body for body in bodies):
            return boundary
        attempt += 1


def _wire_problem(data: bytes) -> str | None:
    """A last check of what goes on the wire: 7-bit, CRLF only, no line over 998 octets."""
    if not data.isascii():
        return "the message would contain non-ASCII bytes"
    lines = data.split(b"\r\n")
    if any(b"\r" in line or b"\n" in line for line in lines):
        return "the message would contain a bare CR or LF"
    if max(len(line) for line in lines) > _MAX_LINE:
        return f"the message would contain a line longer than {_MAX_LINE} octets"
    return None


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    """De-duplicated in order; domains compare case-insensitively, local parts do not."""
    seen: dict[str, str] = {}
    for item in items:
        local, _, domain = item.rpartition("@")
        seen.setdefault(f"{local}@{domain.lower()}", item)
    return tuple(seen.values())

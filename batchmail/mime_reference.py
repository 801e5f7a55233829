"""What a message is made of (``Content``), and the reference way to turn it into bytes:
the email package's ``EmailMessage``, serialized with one named policy, holding the
header values that batchmail writes itself (``headers.raw_value``) as they are.

This path defines what batchmail sends. ``mime_fast`` writes the same bytes faster for
the shapes it knows and is tested against this one; anything it does not handle comes
here. The MIME boundaries are fixed (derived from the Message-ID) so that the output is
deterministic, and chosen so that no body contains them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from email.message import EmailMessage, MIMEPart

from batchmail.attachments import AttachmentPart
from batchmail.headers import POLICY, UTF8_POLICY, Header, raw_value


@dataclass(frozen=True)
class Content:
    """One message before it becomes bytes. Every value here has been validated."""

    headers: tuple[Header, ...]  # in order: From, To, Cc, Reply-To, Subject, Date, ...
    text: str | None
    html: str | None
    attachments: tuple[AttachmentPart, ...]
    message_id: str  # also seeds the MIME boundaries
    utf8: bool = False  # raw UTF-8 headers (RFC 6532), for a non-ASCII address
    # Inline images of the HTML part (each with its Content-ID): the HTML and these go
    # into a multipart/related.
    images: tuple[AttachmentPart, ...] = ()

    @property
    def bodies(self) -> tuple[str, ...]:
        return tuple(body for body in (self.text, self.html) if body)


def reference_bytes(content: Content) -> bytes:
    """The message as the email package builds and serializes it. May raise the email
    package's ValueError, TypeError or MessageError."""
    # A header batchmail writes itself (encoded words, a verbatim value) is set raw and
    # written as it is, since the policy does not refold source values; every other
    # header is a header object, folded by its class.
    policy = (UTF8_POLICY if content.utf8 else POLICY).clone(refold_source="none")
    msg = EmailMessage(policy=policy)
    for header in content.headers:
        raw = raw_value(header)
        if raw is not None:
            msg.set_raw(header.name, raw)
        else:
            msg[header.name] = header.email_value()
    if content.text is not None:
        msg.set_content(content.text, subtype="plain")
    if content.html is not None and content.text is not None:
        msg.add_alternative(content.html, subtype="html")
    elif content.html is not None:
        msg.set_content(content.html, subtype="html")
    if content.images:
        html_part: MIMEPart = msg
        if content.text is not None:  # the alternative's second part
            html_part = [*msg.iter_parts()][1]
        html_part.make_related()
        html_part.set_param("type", "text/html")  # RFC 2387: the root part's type
        for image in content.images:
            html_part.attach(image.part)  # shared, never modified
    if content.attachments:
        msg.make_mixed()
        for attachment in content.attachments:
            msg.attach(attachment.part)  # type: ignore[arg-type]  # shared, never modified
    for number, part in enumerate(msg.walk()):
        if part is not msg:
            del part["MIME-Version"]  # only the top level needs it
        if part.is_multipart():
            part.set_boundary(boundary(content.message_id, number, content.bodies))
    return msg.as_bytes(policy=policy)


def boundary(message_id: str, number: int, bodies: tuple[str, ...]) -> str:
    """The boundary of the ``number``-th part in walk order: fixed (the email package's
    is random) and found in no body. Quoted-printable and base64 output cannot contain
    it unless the text itself does ("-" is not a base64 character; "=XX" is upper case)."""
    attempt = 0
    while True:
        seed = f"{message_id}\0{number}\0{attempt}".encode()
        found = f"bm-{hashlib.sha256(seed).hexdigest()[:40]}"
        if not any(found in body for body in bodies):
            return found
        attempt += 1

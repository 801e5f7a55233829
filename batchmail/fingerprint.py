"""What reaches a campaign's readers, hashed: so a half-finished run notices when the
message changed before it carries on.

It covers the ``message`` keys as loaded (from, to, cc, bcc, reply_to, subject, headers,
unsubscribe, inline_css, the attachment list), the contents of the text, HTML and Markdown
templates and of the shared attachments, and how a row's values are read (``recipients.key``
and ``recipients.encoding``). It does not cover how messages are sent (``smtp``, ``send``),
the exclusion lists, ``name``, nor the YAML's formatting and comments: editing those is not
editing what was sent. The recipients' values are not part of it either: adding rows and
running again is how a list grows. Per-recipient (templated) attachments are checked to
exist at every run.

The recorded fingerprint carries a ``format``. One without it was recorded by an older
batchmail, which hashed the whole campaign file: it is compared in that older way (so a
change made before the upgrade is still caught) and, when nothing changed, replaced by the
current form.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from batchmail.campaign import Campaign
from batchmail.errors import CampaignError, Problem

_CHUNK = 1 << 20
FORMAT = "2"


def campaign_fingerprint(campaign: Campaign) -> dict[str, str]:
    """Each part's name, as the user knows it, mapped to a digest of what it holds."""
    message = campaign.message
    unsubscribe = message.unsubscribe
    values: dict[str, Any] = {
        "message.from": message.from_,
        "message.to": message.to,
        "message.cc": message.cc,
        "message.bcc": message.bcc,
        "message.reply_to": message.reply_to,
        "message.subject": message.subject,
        "message.headers": [list(header) for header in message.headers],
        "message.unsubscribe": [unsubscribe.url, unsubscribe.mailto] if unsubscribe else None,
        "message.inline_css": message.inline_css,
        "message.attachments": list(message.attachments),
        "recipients.key": campaign.recipients.key,
        "recipients.encoding": campaign.recipients.encoding,
    }
    parts = {name: _value_digest(value) for name, value in values.items()}
    parts.update(_file_digests(campaign, {}))
    return {"format": FORMAT, **parts}


def encode(fingerprint: dict[str, str]) -> str:
    return json.dumps(fingerprint, sort_keys=True, ensure_ascii=False)


def changed_parts(recorded: str, campaign: Campaign) -> list[str]:
    """The parts whose content differs from the recorded fingerprint (added or removed too)."""
    try:
        old = json.loads(recorded)
    except ValueError:
        return ["the recorded fingerprint (unreadable)"]
    if not isinstance(old, dict):
        return ["the recorded fingerprint (unreadable)"]
    current = campaign_fingerprint(campaign) if "format" in old else _older_form(campaign)
    names = sorted(set(old) | set(current))
    changed = [name for name in names if old.get(name) != current.get(name)]
    if "format" not in old and campaign.path.name in changed:
        where = changed.index(campaign.path.name)
        changed[where] += (
            " (its fingerprint was recorded by an older batchmail, which compared the whole "
            "file, settings and comments too; if only those changed, --allow-changed is safe)"
        )
    return changed


def _older_form(campaign: Campaign) -> dict[str, str]:
    """The fingerprint as batchmail recorded it before ``format`` 2: the whole campaign file."""
    return _file_digests(campaign, {campaign.path.name: campaign.path})


def _file_digests(campaign: Campaign, parts: dict[str, Path]) -> dict[str, str]:
    message = campaign.message
    if message.text:
        parts[f"message.text ({message.text.name})"] = message.text
    if message.html:
        parts[f"message.html ({message.html.name})"] = message.html
    if message.markdown:
        parts[f"message.markdown ({message.markdown.name})"] = message.markdown
    for template in message.attachments:
        if "{" not in template:  # a templated path names a different file per row
            parts[f"attachment {template}"] = campaign.directory / template
    return {name: _digest(name, path) for name, path in parts.items()}


def _value_digest(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _digest(name: str, path: Path) -> str:
    digest = hashlib.sha256()
    size = 0
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise CampaignError([Problem(str(path), f"cannot read {name}: {exc.strerror}")]) from exc
    return f"{size}:{digest.hexdigest()}"

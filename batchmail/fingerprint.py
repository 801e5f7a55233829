"""What a campaign's messages are made of, hashed: so a half-finished run notices when the
campaign file, a template or a shared attachment changed before it carries on.

The recipients CSV is not part of it: adding rows and running again is how a list grows.
Per-recipient (templated) attachments are not either; they are checked to exist at every run.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from batchmail.campaign import Campaign
from batchmail.errors import CampaignError, Problem

_CHUNK = 1 << 20


def campaign_fingerprint(campaign: Campaign) -> dict[str, str]:
    """Each part's name, as the user knows it, mapped to its size and SHA-256."""
    parts: dict[str, Path] = {campaign.path.name: campaign.path}
    if campaign.message.text:
        parts[f"message.text ({campaign.message.text.name})"] = campaign.message.text
    if campaign.message.html:
        parts[f"message.html ({campaign.message.html.name})"] = campaign.message.html
    if campaign.message.markdown:
        parts[f"message.markdown ({campaign.message.markdown.name})"] = campaign.message.markdown
    for template in campaign.message.attachments:
        if "{" not in template:  # a templated path names a different file per row
            parts[f"attachment {template}"] = campaign.directory / template
    return {name: _digest(name, path) for name, path in parts.items()}


def encode(fingerprint: dict[str, str]) -> str:
    return json.dumps(fingerprint, sort_keys=True, ensure_ascii=False)


def changed_parts(recorded: str, current: dict[str, str]) -> list[str]:
    """The parts whose content differs from the recorded fingerprint (added or removed too)."""
    try:
        old = json.loads(recorded)
    except ValueError:
        return ["the recorded fingerprint (unreadable)"]
    if not isinstance(old, dict):
        return ["the recorded fingerprint (unreadable)"]
    names = sorted(set(old) | set(current))
    return [name for name in names if old.get(name) != current.get(name)]


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

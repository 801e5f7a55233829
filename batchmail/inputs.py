"""The files a campaign reads, so that nothing batchmail writes lands on one of them.

``status --csv r.csv``, with ``r.csv`` the recipients file, once emptied it before reading
it. A report or a manifest whose path is the campaign file, the recipients file, a template,
a shared attachment, an exclusion list or a file of the campaign's state (journal, lock,
campaign id) is refused, compared by resolved path and by device and inode: a symlink or a
hard link to an input is that input.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from batchmail.campaign import Campaign
from batchmail.errors import CampaignError, Problem


def refuse_input(campaign: Campaign, path: Path, option: str) -> None:
    """Raise CampaignError (exit 2) if ``path``, where ``option`` writes, is an input."""
    target = _resolved(path)
    target_id = _file_id(target)
    state = _resolved(campaign.state_dir)
    found = [f"a file of the campaign's state ({state})"] if target.parent == state else []
    for what, source in _inputs(campaign):
        resolved = _resolved(source)
        if resolved == target or (target_id is not None and _file_id(resolved) == target_id):
            found.append(what)
    if found:
        message = f"{path} is {found[0]}: batchmail never writes over a file the campaign reads"
        raise CampaignError([Problem(option, f"{message}; choose another file name")])


def _inputs(campaign: Campaign) -> Iterator[tuple[str, Path]]:
    yield "the campaign file", campaign.path
    yield "the recipients file (recipients.file)", campaign.recipients.file
    for key in ("text", "html", "markdown"):
        template = getattr(campaign.message, key)
        if template is not None:
            yield f"the template message.{key}", template
    for template in campaign.message.attachments:
        if "{" not in template:  # a templated path names a different file per row
            yield "an attachment (message.attachments)", campaign.directory / template
    for exclusion in campaign.recipients.exclude:
        yield "an exclusion list (recipients.exclude)", exclusion
    state = campaign.state_dir
    try:
        entries = list(state.iterdir())
    except OSError:  # no state yet (or none we can list): nothing to link to
        entries = []
    for entry in entries:
        if not entry.is_dir():
            yield f"a file of the campaign's state ({state})", entry


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop: compared as written
        return path.absolute()


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino

"""The random id a campaign's Message-IDs are made from, kept beside its journal.

A recipient's Message-ID is a hash of the campaign's id and the recipient's key
(``compose``): the same at every attempt of one campaign, so a receiver can recognise a
resend, and different between campaigns, even two made by ``batchmail init`` with the same
``name``. The id is 128 random bits in ``.batchmail/<name>/campaign-id`` (0600), written by
the first ``run``, ``resend`` or ``--dry-run`` once its check passed, so the dry run's
Message-IDs are the ones the run sends. ``check`` and ``preview`` write nothing: without the
file they use an id of their own, shown but never sent. A test send (``--test-to``) takes a fresh id
every time, so a test copy never carries the real recipient's Message-ID.

A campaign whose journal was started by an older batchmail, which made Message-IDs from the
campaign's ``name``, keeps doing so (a resend carries the ID already sent); it gets no file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import secrets
from pathlib import Path

from batchmail.campaign import Campaign
from batchmail.errors import RunAborted, RunLocked
from batchmail.private_files import make_private_dir

FILE_NAME = "campaign-id"
_JOURNAL = "journal.sqlite3"  # report.journal_path; an older campaign is told by it
_ID = re.compile(r"[0-9a-f]{32}")


def with_id(campaign: Campaign) -> Campaign:
    """``campaign`` with the id its messages carry: its own, or a new one, written nowhere
    (``keep`` writes it, once a run's messages built with it passed their check)."""
    return _with(campaign, _recorded(campaign) or _older(campaign) or _fresh())


def keep(campaign: Campaign) -> None:
    """Write the id ``with_id`` gave ``campaign`` unless the campaign has one. Raises
    RunLocked when another run wrote a different one meanwhile (this run's messages were
    built with an id that is not the campaign's)."""
    seed = campaign.message_id_seed
    kept = _recorded(campaign) or _older(campaign) or _created(campaign, seed)
    if kept != seed:
        raise RunLocked(
            f"{campaign.path.name}: another batchmail run started this campaign meanwhile "
            f"(it wrote {_path(campaign)}); run again"
        )


def for_test(campaign: Campaign) -> Campaign:
    """``campaign`` with a fresh id: a test send's Message-IDs are its own."""
    return _with(campaign, _fresh())


def _with(campaign: Campaign, seed: str) -> Campaign:
    return dataclasses.replace(campaign, message_id_seed=seed)


def _fresh() -> str:
    return secrets.token_hex(16)


def _path(campaign: Campaign) -> Path:
    return campaign.state_dir / FILE_NAME


def _recorded(campaign: Campaign) -> str | None:
    path = _path(campaign)
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise RunAborted(f"cannot read the campaign id {path}: {_reason(exc)}") from exc
    if not _ID.fullmatch(text):
        raise RunAborted(
            f"the campaign id {path} is damaged (expected 32 hexadecimal digits); restore it "
            "from a backup, or delete it if nothing was sent yet"
        )
    return text


def _older(campaign: Campaign) -> str | None:
    """The name, for a journal an older batchmail started (its messages' IDs came from it)."""
    return campaign.name if (campaign.state_dir / _JOURNAL).exists() else None


def _created(campaign: Campaign, seed: str) -> str:
    """``seed`` written as the campaign's id, or the id another first run wrote before it
    (the first link wins)."""
    path = _path(campaign)
    temporary = path.with_name(f".{FILE_NAME}.{os.getpid()}.{seed[:8]}")
    try:
        make_private_dir(path.parent)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, f"{seed}\n".encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(temporary, path)
        except FileExistsError:
            return _recorded(campaign) or seed
        _sync_directory(path.parent)
    except OSError as exc:
        raise RunAborted(f"cannot create the campaign id {path}: {_reason(exc)}") from exc
    finally:
        with contextlib.suppress(OSError):
            temporary.unlink()
    return seed


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc)

"""Several sender accounts: which one sends a message, and how much each may send.

``smtp`` may be a list of accounts, each with ``match``: globs or exact addresses on the
From address (case-insensitive; ``*@sales.example.com``). A message goes through the first
account that matches its From address; an account without ``match`` takes every From. The
From address is the message's envelope sender (``compose`` takes one from the other), which
the journal keeps too, so a daily limit counts each account's own messages in it.

Pure: no server, no journal file; ``delivery`` wires these into the runners.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime

from batchmail.campaign import Campaign, SmtpConfig
from batchmail.errors import CampaignError, Problem
from batchmail.outcomes import ComposedMessage

# (envelope sender, messages, earliest time) per sender, as Journal.sent_since_by_sender gives
SenderUsage = Iterable[tuple[str, int, str | None]]


def sender(message: ComposedMessage) -> str:
    """The address accounts are matched on: the From address, which is the envelope sender."""
    return message.envelope.mail_from


def matches(account: SmtpConfig, address: str) -> bool:
    """Whether ``account`` sends mail from ``address`` (an addr-spec)."""
    if not account.match:
        return True
    folded = address.casefold()
    return any(fnmatch.fnmatchcase(folded, pattern.casefold()) for pattern in account.match)


def account_for(accounts: Sequence[SmtpConfig], address: str) -> int | None:
    """The index of the first account that sends from ``address``, or None."""
    for index, account in enumerate(accounts):
        if matches(account, address):
            return index
    return None


def describe(account: SmtpConfig) -> str:
    """How messages name an account: ``smtp[1] (*@sales.example.com)``."""
    patterns = ", ".join(account.match) or "any From"
    return f"{account.key_path} ({patterns})"


def sender_check(campaign: Campaign) -> Callable[[ComposedMessage], None] | None:
    """For building each message: a function that raises ``CampaignError`` (naming the row)
    when no account sends from the message's From address; None when every From is sent
    (no account has a ``match``)."""
    accounts = campaign.smtp_accounts
    if not any(account.match for account in accounts):
        return None
    csv_name = campaign.recipients.file.name
    tried = "; ".join(f"{a.key_path}.match: {', '.join(a.match)}" for a in accounts)

    def check(message: ComposedMessage) -> None:
        address = sender(message)
        if account_for(accounts, address) is None:
            where = f"{csv_name}, row {message.row_number}, message.from"
            trouble = (
                f"the From address {address} matches no sender account ({tried}); add an "
                "account for it, or change the `match` of one"
            )
            raise CampaignError([Problem(where, trouble)])

    return check


def owned_by(accounts: Sequence[SmtpConfig], index: int) -> Callable[[ComposedMessage], bool]:
    """Whether a message goes through ``accounts[index]`` (the first account it matches)."""

    def accept(message: ComposedMessage) -> bool:
        return account_for(accounts, sender(message)) == index

    return accept


def usage(
    accounts: Sequence[SmtpConfig], index: int, by_sender: SenderUsage
) -> tuple[int, str | None]:
    """How many of the messages counted per sender went through ``accounts[index]``, and the
    earliest of their times (ISO 8601 strings compare in time order)."""
    count = 0
    earliest: str | None = None
    for address, number, first in by_sender:
        if account_for(accounts, address) != index:
            continue
        count += number
        if first is not None and (earliest is None or first < earliest):
            earliest = first
    return count, earliest


def with_own_limits(campaign: Campaign, account: SmtpConfig) -> Campaign:
    """The campaign as one account's runner sees it: the account's own ``rate`` and
    ``daily_limit`` in place of ``send``'s, where it sets them."""
    send = campaign.send
    limits = dataclasses.replace(
        send,
        rate=send.rate if account.rate is None else account.rate,
        daily_limit=send.daily_limit if account.daily_limit is None else account.daily_limit,
    )
    return dataclasses.replace(campaign, smtp=account, send=limits)


def capped_note(capped: Sequence[tuple[SmtpConfig, int, datetime]], several: bool) -> str:
    """Which daily limits stopped the run: "daily limit of 3 messages reached" (one account),
    or naming each account with several."""
    if not several:
        return "; ".join(f"daily limit of {_messages(limit)} reached" for _, limit, _ in capped)
    return "; ".join(
        f"daily limit of {_messages(limit)} reached for {describe(account)}"
        for account, limit, _ in capped
    )


def _messages(count: int) -> str:
    return f"{count} message{'s' * (count != 1)}"

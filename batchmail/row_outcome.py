"""What a mail transaction's outcome means for its row: pure logic, no server.

A row's status is about its own people, the addresses its template puts in ``to``. With a
fixed ``bcc: archive@...``, a transaction whose To was refused and whose Bcc was accepted
went through, but not to the person: the row is ``failed`` (every To refusal permanent) or
``deferred`` (some temporary: retried, to those recipients alone). Cc and Bcc refusals stay
in ``refused`` for ``status`` to show, and do not change the status.

``accepted`` says which envelope recipients have the message, so that a retry or a resend
goes only to the others (``still_to_reach``).
"""

from __future__ import annotations

import dataclasses

from batchmail.addresses import AddressError, identity
from batchmail.outcomes import ComposedMessage, Envelope, Outcome, Status


def for_row(outcome: Outcome, envelope: Envelope) -> Outcome:
    """The transaction's ``outcome`` as the status of the row whose envelope it was."""
    if not outcome.refused:
        return outcome
    own = set(envelope.own)
    refused_own = [r for r in outcome.refused if r.address in own]
    delivered = outcome.status is Status.SENT
    accepted: tuple[str, ...] = ()
    if delivered and refused_own:
        refused = {r.address for r in outcome.refused}
        accepted = tuple(a for a in envelope.rcpt_tos if a not in refused)
    every_own_refused = own <= {r.address for r in refused_own}
    if not refused_own or not (delivered or every_own_refused):
        return outcome  # the To addresses were all accepted, or the transaction decided
    transient = [r for r in refused_own if not 500 <= r.code < 600]
    first = (transient or refused_own)[0]
    return dataclasses.replace(
        outcome,
        status=Status.DEFERRED if transient else Status.FAILED,
        code=first.code,
        reply=first.reply,
        transient=bool(transient),
        accepted=accepted,
    )


def still_to_reach(message: ComposedMessage, accepted: tuple[str, ...]) -> ComposedMessage | None:
    """The message with only the envelope recipients not in ``accepted`` (those that have
    it already are never sent it again), or None when it has reached every one."""
    if not accepted:
        return message
    # Compared as mailboxes: a spreadsheet cleaned between runs (Ann@ -> ann@) mails no
    # one twice.
    have = {_mailbox(a) for a in accepted}
    envelope = message.envelope
    rest = tuple(a for a in envelope.rcpt_tos if _mailbox(a) not in have)
    if not rest:
        return None
    to = tuple(a for a in envelope.own if _mailbox(a) not in have)
    narrowed = Envelope(envelope.mail_from, rest, to)
    return dataclasses.replace(message, envelope=narrowed)


def _mailbox(address: str) -> str:
    try:
        return identity(address)
    except AddressError:
        return address  # an envelope address is valid; a journalled one is compared as is

"""What the journal's entries become when marks, outcomes and reservations are applied: the
one place that says how a status and an attempt count change.

- A mark (the message's data is about to go out) is a new attempt, with no reply yet: an
  earlier attempt's reply must not linger.
- An outcome ends the attempt its mark began, or, for a message refused before its data went
  out (never marked), is an attempt of its own.
- A reservation a killed run left is settled by ``recovered``: one from an earlier boot of the
  machine may have lost its mark with the power, so it counts as marked; one from this boot
  was never marked (only a power cut or a crash of the machine loses a mark), so it goes.
- ``sent`` is final: nothing changes a sent entry.
- The envelope recipients that have the message (the plain addresses among ``refused``; see
  the journal's schema) are kept through every later mark and outcome: a resend never goes
  to them again.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from batchmail.journal_log import Event
from batchmail.outcomes import Status

IN_FLIGHT = "in_flight"
COLUMNS = (
    "key",
    "row_number",
    "status",
    "code",
    "reply",
    "attempts",
    "message_id",
    "mail_from",
    "rcpt_tos",
    "refused",
    "first_attempt_at",
    "updated_at",
)
KEYS_PER_QUERY = 500  # well under SQLite's limit on bound parameters (32,766)
# What an entry needs of its message beyond the event: row number, Message-ID, envelope
# sender, envelope recipients (as JSON).
About = tuple[int, str, str, str]
Row = dict[str, Any]

NAMED = ", ".join(":" + c for c in COLUMNS)  # a row's values, bound by column name
# first_attempt_at is written as computed: the first try's time, kept by ``after``.
PUT = (
    f"INSERT INTO entries ({', '.join(COLUMNS)}) VALUES ({NAMED})"
    " ON CONFLICT (key) DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in COLUMNS[1:])
)


def after(previous: Row | None, key: str, about: About, event: Event) -> Row:
    """The entry ``key`` becomes when ``event`` happens to it."""
    row_number, message_id, mail_from, rcpt_tos = about
    if event.outcome is None:
        attempts = 1 if previous is None else previous["attempts"] + 1
        status, code, reply, refused = IN_FLIGHT, None, "", _with_accepted("[]", previous)
    else:
        status, code, reply, refused = event.outcome
        refused = _with_accepted(refused, previous)
        if previous is None:
            attempts = 1
        elif previous["status"] == IN_FLIGHT:
            attempts = previous["attempts"]
        else:
            attempts = previous["attempts"] + 1
    return {
        "key": key,
        "row_number": row_number,
        "status": status,
        "code": code,
        "reply": reply,
        "attempts": attempts,
        "message_id": message_id,
        "mail_from": mail_from,
        "rcpt_tos": rcpt_tos,
        "refused": refused,
        "first_attempt_at": event.at if previous is None else previous["first_attempt_at"],
        "updated_at": event.at,
    }


def _with_accepted(refused: str, previous: Row | None) -> str:
    """``refused`` (the journal's JSON) with the addresses ``previous`` says have the
    message added; as it is when there are none (the common case: nothing parsed)."""
    if previous is None or '"' not in previous["refused"] or previous["refused"] == refused:
        return refused
    accepted = [item for item in json.loads(previous["refused"]) if isinstance(item, str)]
    if not accepted:
        return refused
    items = json.loads(refused)
    items += [address for address in accepted if address not in items]
    return json.dumps(items)


def fold(connection: sqlite3.Connection, items: Sequence[tuple[Event, About]], guard: bool) -> None:
    """Apply the events in order, in the caller's transaction, and end the reservations of
    the messages they concern. ``guard``: refuse (ValueError) an event for a message the
    journal records as sent, before anything is written; without it (events that already
    happened: data went out) such an event is passed over, as sent is final."""
    keys = {event.key for event, _ in items}
    previous = rows(connection, keys)
    connection.executemany(PUT, _applied(items, previous, guard).values())
    connection.executemany("DELETE FROM reserved WHERE key = ?", ((key,) for key in keys))


def recovered(
    connection: sqlite3.Connection, boot: str | None, logged: Sequence[Event]
) -> dict[str, Row]:
    """The entries that the log of a writer that is gone (``logged``, not yet folded) and
    the reservations it left change, as they become: key -> row."""
    reservations = {
        str(r[0]): tuple(r)
        for r in connection.execute(
            "SELECT key, boot_id, row_number, message_id, mail_from, rcpt_tos, reserved_at"
            " FROM reserved"
        )
    }
    previous = rows(connection, {event.key for event in logged} | reservations.keys())

    def about(key: str) -> About | None:
        reservation = reservations.get(key)
        if reservation is not None:
            return reservation[2:6]  # type: ignore[return-value]
        entry = previous.get(key)  # reserved, marked, folded; its outcome came after
        if entry is None:
            return None  # nothing to build an entry from: not expected
        return (entry["row_number"], entry["message_id"], entry["mail_from"], entry["rcpt_tos"])

    items = [(event, known) for event in logged if (known := about(event.key)) is not None]
    told = {event.key for event in logged}
    # The rest: never marked on this boot (they go), or maybe marked before a restart.
    items += [
        (Event(key, reservation[6]), reservation[2:6])  # type: ignore[misc]
        for key, reservation in reservations.items()
        if key not in told and (boot is None or reservation[1] != boot)
    ]
    return _applied(items, previous, guard=False)


def _applied(
    items: Iterable[tuple[Event, About]], previous: dict[str, Row], guard: bool
) -> dict[str, Row]:
    """The entries the events change (see fold's ``guard``), as they become: key -> row."""
    changed: dict[str, Row] = {}
    for event, about in items:
        before = changed.get(event.key) or previous.get(event.key)
        if before is not None and before["status"] == Status.SENT:
            if guard:
                action = "record an outcome for" if event.outcome else "mark in flight"
                raise sent_already(event.key, action)
            continue
        changed[event.key] = after(before, event.key, about, event)
    return changed


def rows(
    connection: sqlite3.Connection, keys: Iterable[str], table: str = "entries"
) -> dict[str, Row]:
    """The entries of those keys ``table`` has (the entries, or a reader's view of them), a
    few hundred keys a query."""
    keys = list(keys)
    found: dict[str, Row] = {}
    select = f"SELECT {', '.join(COLUMNS)} FROM {table} WHERE key IN "
    for start in range(0, len(keys), KEYS_PER_QUERY):
        chunk = keys[start : start + KEYS_PER_QUERY]
        for row in connection.execute(select + "(" + ", ".join("?" * len(chunk)) + ")", chunk):
            found[row[0]] = dict(zip(COLUMNS, row, strict=True))
    return found


def sent_already(key: str, action: str) -> ValueError:
    # A guard against sending twice: the runner must never retry a delivered message.
    return ValueError(f"cannot {action} {key!r}: the journal already records it as sent")


def unplaced(connection: sqlite3.Connection, logged: Sequence[Event]) -> int:
    """How many keys the side log tells of that the journal has neither an entry nor a
    reservation for: every logged message was reserved first, so the journal lost a write."""
    keys = {event.key for event in logged}
    if not keys:
        return 0
    known = set(rows(connection, keys))
    ordered = sorted(keys)
    for start in range(0, len(ordered), KEYS_PER_QUERY):
        chunk = ordered[start : start + KEYS_PER_QUERY]
        select = f"SELECT key FROM reserved WHERE key IN ({', '.join('?' * len(chunk))})"
        known.update(key for (key,) in connection.execute(select, chunk))
    return len(keys - known)

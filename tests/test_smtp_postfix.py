"""SmtpSession against real Postfix: ``smtp-sink`` (PIPELINING: DATA pipelined) and a
throw-away ``smtpd`` (PIPELINING and CHUNKING: BDAT windows). Skipped without Postfix; CI
installs it (see tests/postfix.py).

Each test checks every message's outcome and, from the server's own record (smtpd's log,
smtp-sink's dump), that it took exactly the messages reported sent, each once.
"""

from __future__ import annotations

import collections
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import postfix
import pytest
from campaign_files import batchmail, people, status_json, write_campaign
from servers import make_message

from batchmail.campaign import SmtpConfig
from batchmail.outcomes import ComposedMessage, Outcome, Status
from batchmail.smtp import WINDOW_CHUNKING, WINDOW_PIPELINING, WINDOWS_PER_BATCH, SmtpSession
from batchmail.transport import NOT_SENT


def config(server: postfix.PostfixServer) -> SmtpConfig:
    return SmtpConfig(server.host, server.port, "none", timeout=10, data_timeout=30)


def tagged(count: int, body: str = "Hello.\n", **to: str) -> list[ComposedMessage]:
    """Messages with Message-IDs no other test uses (the smtpd serves a whole module);
    ``to`` maps "<n>" to the recipient of message n (1-based)."""
    tag = uuid.uuid4().hex[:8]
    return [
        make_message(
            n,
            to.get(str(n), f"user{n}@example.org"),
            body=body,
            message_id=f"<{tag}-{n}@batchmail.test>",
        )
        for n in range(1, count + 1)
    ]


def taken(
    server: postfix.PostfixServer, messages: Sequence[ComposedMessage], count: int
) -> list[str]:
    """Of ``messages``, the Message-IDs the server took (waiting for ``count``); smtpd's
    queue manager may list them in another order than they were sent."""
    ours = {m.message_id for m in messages}
    deadline = time.monotonic() + 60  # a bound for a busy machine: the wait ends at ``count``
    while True:
        ids = [i for i in server.message_ids() if i in ours]
        if len(ids) >= count or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    time.sleep(0.2)  # and nothing more comes
    return [i for i in server.message_ids() if i in ours]


def statuses(outcomes: list[Outcome]) -> list[Status]:
    return [o.status for o in outcomes]


def test_smtp_sink_takes_a_pipelined_data_window(smtp_sink: postfix.PostfixServer) -> None:
    messages = tagged(20, body=".\n.leading dot\n..two\nlast\n")
    calls: list[int] = []
    with SmtpSession(config(smtp_sink)) as session:
        session.connect()
        assert (session.pipelining, session.window) == ("pipelining", WINDOW_PIPELINING)
        outcomes = session.send_batch(messages, lambda going: calls.append(len(going)))
    assert statuses(outcomes) == [Status.SENT] * 20
    assert calls == [1] * 20  # DATA: before_data once per message, as its 354 comes
    assert taken(smtp_sink, messages, 20) == [m.message_id for m in messages]


def test_smtp_sink_421_at_rcpt_defers_the_window() -> None:
    reason = postfix.missing(smtpd=False)
    if reason is not None:
        pytest.skip(reason)
    with postfix.smtp_sink(fault=("-Q", "RCPT")) as server:
        session = SmtpSession(config(server))
        session.connect()
        outcomes = session.send_batch(tagged(4), lambda going: None)
        assert not session.connected
    assert (outcomes[0].status, outcomes[0].code, outcomes[0].transient) == (
        Status.DEFERRED,
        421,
        True,
    )
    assert [(o.status, o.reply) for o in outcomes[1:]] == [(Status.DEFERRED, NOT_SENT)] * 3
    assert server.message_ids() == []


def test_postfix_takes_a_bdat_window_with_refusals_inside(
    postfix_smtpd: postfix.PostfixServer,
) -> None:
    messages = tagged(40, **{"7": "refuse@example.org", "19": "defer@example.org"})
    messages[29] = make_message(
        30, rcpt_tos=("ok@example.org", "refuse@example.org"), message_id=messages[29].message_id
    )
    calls: list[int] = []
    with SmtpSession(config(postfix_smtpd)) as session:
        session.connect()
        window = WINDOW_CHUNKING * WINDOWS_PER_BATCH
        assert (session.pipelining, session.window) == ("chunking", window)
        outcomes = session.send_batch(messages, lambda going: calls.append(len(going)))
        assert session.connected
    # BDAT: once for each group of a quarter window, before that group's data.
    assert calls == [16, 16, 8]
    expected = [Status.SENT] * 40
    expected[6], expected[18] = Status.FAILED, Status.DEFERRED
    assert statuses(outcomes) == expected
    assert (outcomes[6].code, outcomes[18].code, outcomes[18].transient) == (550, 451, True)
    assert "no such user" in outcomes[6].reply
    assert [(r.address, r.code) for r in outcomes[29].refused] == [("refuse@example.org", 550)]
    sent = [
        m.message_id for m, o in zip(messages, outcomes, strict=True) if o.status is Status.SENT
    ]
    assert sorted(taken(postfix_smtpd, messages, 38)) == sorted(sent)  # each once


def test_postfix_takes_megabytes_of_bdat_while_answering(
    postfix_smtpd: postfix.PostfixServer,
) -> None:
    body = "a line of some length, as in a real newsletter...\n" * 2800  # ~140 KB
    messages = tagged(64, body=body)
    with SmtpSession(config(postfix_smtpd), window=64) as session:
        session.connect()
        started = time.monotonic()
        outcomes = session.send_batch(messages, lambda going: None)
        elapsed = time.monotonic() - started
    assert statuses(outcomes) == [Status.SENT] * 64
    assert elapsed < 20, elapsed
    assert sorted(taken(postfix_smtpd, messages, 64)) == sorted(m.message_id for m in messages)


def test_batchmail_run_against_postfix(
    tmp_path: Path, postfix_smtpd: postfix.PostfixServer
) -> None:
    rows = people(30)
    rows[4]["email"] = "refuse@example.org"
    smtp = {"host": postfix_smtpd.host, "port": postfix_smtpd.port, "security": "none"}
    campaign = write_campaign(tmp_path, rows, smtp=smtp, name=f"pf-{uuid.uuid4().hex[:8]}")
    before = len(postfix_smtpd.message_ids())

    result = batchmail("run", campaign, "--quiet")

    assert result.returncode == 1, result.stderr
    assert "29 sent, 1 failed" in result.stdout
    status = status_json(campaign)
    assert status["counts"]["sent"] == 29
    assert [(r["key"], r["code"]) for r in status["recipients"]] == [("refuse@example.org", 550)]
    ours = collections.Counter(postfix_smtpd.wait_for(before + 29)[before:])
    assert len(ours) == 29 and set(ours.values()) == {1}


def test_to_refused_by_postfix_with_an_archive_bcc_is_not_sent(
    tmp_path: Path, postfix_smtpd: postfix.PostfixServer
) -> None:
    """Postfix refuses a To (550) or defers it (451) while the archive Bcc accepts: those rows
    are failed and deferred, and a resend goes to the To alone: the archive has each row's
    message once."""
    rows = [{**row, "cc": ""} for row in people(4)]
    rows[1]["email"] = "defer@example.org"
    rows[2]["email"] = "refuse@example.org"
    rows[3]["cc"] = "refuse@example.org"
    smtp = {"host": postfix_smtpd.host, "port": postfix_smtpd.port, "security": "none"}
    campaign = write_campaign(
        tmp_path,
        rows,
        smtp=smtp,
        message={"cc": "{{ cc }}", "bcc": "archive@example.com"},
        send={"retries": 1, "retry_delay": 0.01},
        name=f"pf-{uuid.uuid4().hex[:8]}",
    )
    before = len(postfix_smtpd.message_ids())

    first = batchmail("run", campaign, "--quiet")
    assert first.returncode == 1, first.stdout + first.stderr
    assert "2 sent, 1 failed, 1 deferred" in first.stdout
    listed = {r["key"]: r for r in status_json(campaign)["recipients"]}
    assert (listed["defer@example.org"]["status"], listed["defer@example.org"]["code"]) == (
        "deferred",
        451,
    )
    assert (listed["refuse@example.org"]["status"], listed["refuse@example.org"]["code"]) == (
        "failed",
        550,
    )
    assert listed["person4@example.org"]["status"] == "sent"
    assert [r["code"] for r in listed["person4@example.org"]["refused"]] == [550]

    resent = batchmail("resend", campaign, "--quiet")
    assert resent.returncode == 1, resent.stdout + resent.stderr
    assert "0 sent, 1 failed, 1 deferred" in resent.stdout
    # A marker sent after the resend: once the server lists it, it has listed what came
    # before (the resend sent no data: every envelope recipient left was refused).
    marker = batchmail("run", campaign, "--test-to", "marker@example.org", "--limit", "1")
    assert marker.returncode == 0, marker.stderr
    ours = collections.Counter(postfix_smtpd.wait_for(before + 5)[before:])
    assert len(ours) == 5 and set(ours.values()) == {1}, ours

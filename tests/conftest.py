"""Shared fixtures: real SMTP servers (see servers.py), one per test, stopped after it.

Each ``smtp_server_*`` fixture yields a started ``SmtpTestServer``; configure its fault on
``server.handler`` (e.g. ``smtp_server_dropping.handler.drop_at = "end_of_data"``) and build a
client config with ``make_smtp_config(server)``. For a combination not named here, use
``start_smtp_server(handler, security=..., auth_mechanisms=..., mode=...)``.

Servers offer PIPELINING and CHUNKING by default (``servers.DEFAULT_MODE``). The fault
fixtures run each test once per server mode (the test id says which: ``[plain]``,
``[pipelining]``, ``[chunking]``), so that every fault test holds for a client sending one
command at a time and for one pipelining. ``smtp_server_dropping``, ``_421``, ``_refusing``
and ``_deferring`` leave out "chunking": their tests pin down when ``before_data`` runs and
what a connection lost before the data means, which BDAT changes by design (the whole
window's data goes out before the first reply, so what the server did not answer before it
went is unknown); tests/test_smtp_pipelining.py covers BDAT's faults.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import postfix
import pytest
from servers import (
    AUTH_MECHANISMS,
    MODES,
    Certificates,
    ClosingHandler,
    DataRejectingHandler,
    DeferringHandler,
    DroppingHandler,
    HeloOnlyHandler,
    HidingStarttlsHandler,
    RecordingHandler,
    RefusingHandler,
    SmtpTestServer,
    StallingHandler,
    StartServer,
)

from batchmail.sink import free_port

ONE_AT_A_TIME_OR_DATA_PIPELINING = ["plain", "pipelining"]


@pytest.fixture
def start_smtp_server() -> Iterator[StartServer]:
    """``start_smtp_server(handler=None, **options)`` starts an ``SmtpTestServer``; every
    server started this way is stopped when the test ends."""
    servers: list[SmtpTestServer] = []

    def start(handler: RecordingHandler | None = None, **options: Any) -> SmtpTestServer:
        server = SmtpTestServer(handler, **options)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def certificates(tmp_path: Path) -> Certificates:
    """A throw-away CA and a certificate for 127.0.0.1 and localhost; ``.ca_file`` is the
    CA's PEM."""
    directory = tmp_path / "tls"
    directory.mkdir()
    return Certificates.create(directory)


@pytest.fixture
def smtp_server(start_smtp_server: StartServer) -> SmtpTestServer:
    """Plain SMTP: no TLS, no AUTH; records every message."""
    return start_smtp_server()


@pytest.fixture
def smtp_server_requiring_auth(start_smtp_server: StartServer) -> SmtpTestServer:
    """Plain SMTP requiring AUTH PLAIN or LOGIN as alice/s3cret-pw (so clients need
    ``insecure_auth``); a wrong password gets 535."""
    return start_smtp_server(auth_mechanisms=AUTH_MECHANISMS)


@pytest.fixture
def smtp_server_starttls_requiring_auth(
    start_smtp_server: StartServer, certificates: Certificates
) -> SmtpTestServer:
    """STARTTLS, then AUTH PLAIN or LOGIN as alice/s3cret-pw."""
    return start_smtp_server(
        security="starttls", certificates=certificates, auth_mechanisms=AUTH_MECHANISMS
    )


@pytest.fixture
def smtp_server_starttls(
    start_smtp_server: StartServer, certificates: Certificates
) -> SmtpTestServer:
    """STARTTLS with a trustme certificate for 127.0.0.1; ``server.ca_file`` is its CA."""
    return start_smtp_server(security="starttls", certificates=certificates)


@pytest.fixture
def smtp_server_tls(start_smtp_server: StartServer, certificates: Certificates) -> SmtpTestServer:
    """Implicit TLS (security "tls"); ``server.ca_file`` is the CA."""
    return start_smtp_server(security="tls", certificates=certificates)


@pytest.fixture
def smtp_server_without_starttls(
    start_smtp_server: StartServer, certificates: Certificates
) -> SmtpTestServer:
    """Could do STARTTLS but does not advertise it (a downgrade); ``security`` is starttls."""
    return start_smtp_server(
        HidingStarttlsHandler(), security="starttls", certificates=certificates
    )


@pytest.fixture(params=ONE_AT_A_TIME_OR_DATA_PIPELINING)
def smtp_server_refusing(
    request: pytest.FixtureRequest, start_smtp_server: StartServer
) -> SmtpTestServer:
    """550 for RCPT to addresses containing "refuse"."""
    return start_smtp_server(RefusingHandler(), mode=request.param)


@pytest.fixture(params=ONE_AT_A_TIME_OR_DATA_PIPELINING)
def smtp_server_deferring(
    request: pytest.FixtureRequest, start_smtp_server: StartServer
) -> SmtpTestServer:
    """451 for RCPT to addresses containing "defer"; set ``handler.defer_times`` to accept
    them after that many deferrals."""
    return start_smtp_server(DeferringHandler(), mode=request.param)


@pytest.fixture(params=ONE_AT_A_TIME_OR_DATA_PIPELINING)
def smtp_server_dropping(
    request: pytest.FixtureRequest, start_smtp_server: StartServer
) -> SmtpTestServer:
    """Drops the connection without a reply: set ``handler.drop_at`` ("mail", "rcpt",
    "end_of_data"), ``handler.drop_after`` (messages accepted first) and ``handler.drop_times``.
    By default: once, at the first MAIL."""
    return start_smtp_server(DroppingHandler(), mode=request.param)


@pytest.fixture(params=ONE_AT_A_TIME_OR_DATA_PIPELINING)
def smtp_server_421(
    request: pytest.FixtureRequest, start_smtp_server: StartServer
) -> SmtpTestServer:
    """Answers 421 and closes at MAIL once ``handler.close_after`` (1) messages were accepted
    on the connection; accepts again after a reconnect."""
    return start_smtp_server(ClosingHandler(), mode=request.param)


@pytest.fixture(params=MODES)
def smtp_server_stalling(
    request: pytest.FixtureRequest, start_smtp_server: StartServer
) -> SmtpTestServer:
    """Never answers the end of the message data."""
    return start_smtp_server(StallingHandler(), mode=request.param)


@pytest.fixture(params=MODES)
def smtp_server_rejecting_data(
    request: pytest.FixtureRequest, start_smtp_server: StartServer
) -> SmtpTestServer:
    """Refuses every message at the end of data with ``handler.reply`` (554 by default)."""
    return start_smtp_server(DataRejectingHandler(), mode=request.param)


@pytest.fixture
def smtp_server_helo_only(start_smtp_server: StartServer) -> SmtpTestServer:
    """Refuses EHLO; accepts HELO."""
    return start_smtp_server(HeloOnlyHandler())


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on."""
    return free_port()


# --- real Postfix (tests/postfix.py) ------------------------------------------------------------

POSTFIX_ACCESS = {
    "refuse@example.org": "550 5.1.1 no such user",
    "defer@example.org": "451 4.3.0 try again later",
}


@pytest.fixture(scope="module")
def postfix_smtpd() -> Iterator[postfix.PostfixServer]:
    """A throw-away Postfix smtpd (PIPELINING, CHUNKING) for the whole test module, discarding
    what it takes; RCPT refused with 550 for refuse@example.org and 451 for defer@example.org
    (``POSTFIX_ACCESS``). Skips when Postfix is not installed or we are not root."""
    reason = postfix.missing()
    if reason is not None:
        pytest.skip(reason)
    with postfix.postfix_smtpd(POSTFIX_ACCESS) as server:
        yield server


@pytest.fixture
def smtp_sink() -> Iterator[postfix.PostfixServer]:
    """Postfix's smtp-sink (PIPELINING, no CHUNKING), keeping every message in a dump."""
    reason = postfix.missing(smtpd=False)
    if reason is not None:
        pytest.skip(reason)
    with postfix.smtp_sink() as server:
        yield server


@pytest.fixture
def composed_rows(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The row number of every message composed in this process from now on, in order (the
    real Composer.compose, noting each row as it goes)."""
    from batchmail.compose import Composer

    rows: list[int] = []
    compose = Composer.compose

    def counting(self: Composer, recipient, rendered, **kwargs):  # type: ignore[no-untyped-def]
        rows.append(recipient.row_number)
        return compose(self, recipient, rendered, **kwargs)

    monkeypatch.setattr(Composer, "compose", counting)
    return rows

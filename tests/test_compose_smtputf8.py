"""Internationalized addresses: a non-ASCII local part (zoë@example.org) is composed with
raw UTF-8 headers (RFC 6532), sent with SMTPUTF8 when the server offers it, and fails
clearly when it does not, through the real command line and real servers."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from campaign_files import batchmail, people, status_json, write_campaign
from servers import SmtpTestServer, StartServer

from batchmail.campaign import Campaign, MessageConfig, RecipientsConfig, SendConfig, SmtpConfig
from batchmail.compose import Composer
from batchmail.errors import CampaignError
from batchmail.outcomes import ComposedMessage
from batchmail.recipients import Recipient
from batchmail.render import Renderer

DATE = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)


def compose(tmp_path: Path, fields: dict[str, str], **message: Any) -> ComposedMessage:
    (tmp_path / "body.txt.j2").write_text("Hallo {{ name }},\nGrüße\n", encoding="utf-8")
    settings = {
        "from_": "Team <team@example.com>",
        "to": "{{ name }} <{{ email }}>",
        "subject": "Grüße, {{ name }}",
        "text": tmp_path / "body.txt.j2",
        **message,
    }
    campaign = Campaign(
        path=tmp_path / "c.yaml",
        name="intl",
        smtp=SmtpConfig("localhost", 25, "none"),
        recipients=RecipientsConfig(tmp_path / "people.csv"),
        message=MessageConfig(**settings),
        send=SendConfig(),
    )
    renderer = Renderer.compile(campaign)
    recipient = Recipient(1, fields["email"], fields)
    return Composer.prepare(campaign, renderer).compose(
        recipient, renderer.render(recipient), date=DATE
    )


def test_a_non_ascii_local_part_is_written_in_raw_utf8(tmp_path: Path) -> None:
    composed = compose(tmp_path, {"name": "Zoë", "email": "zoë@bücher.de"})
    assert composed.envelope.rcpt_tos == ("zoë@xn--bcher-kva.de",)
    header_block, body = composed.data.split(b"\r\n\r\n", 1)
    # RFC 6532: the address in raw UTF-8; the name an encoded word, as in every message.
    assert "To: =?utf-8?q?Zo=C3=AB?= <zoë@xn--bcher-kva.de>".encode() in header_block
    assert body.isascii()  # the body stays 7-bit (quoted-printable here)
    message = email.message_from_string(composed.data.decode("utf-8"), policy=email.policy.default)
    (to,) = message["To"].addresses
    assert (to.display_name, to.addr_spec) == ("Zoë", "zoë@xn--bcher-kva.de")
    assert message["Subject"] == "Grüße, Zoë"
    assert message.get_content().replace("\r\n", "\n") == "Hallo Zoë,\nGrüße\n"


def test_an_ascii_row_of_the_same_campaign_stays_ascii(tmp_path: Path) -> None:
    assert compose(tmp_path, {"name": "Zoë", "email": "zoe@example.com"}).data.isascii()


def test_a_non_ascii_bcc_is_in_the_envelope_only(tmp_path: Path) -> None:
    composed = compose(
        tmp_path, {"name": "Ann", "email": "ann@example.com"}, bcc="jörg@example.com"
    )
    assert composed.data.isascii()
    assert composed.envelope.rcpt_tos == ("ann@example.com", "jörg@example.com")


@pytest.mark.parametrize(
    ("field", "key"), [("reply_to", "message.reply_to"), ("headers", "message.headers.Sender")]
)
def test_a_non_ascii_local_part_outside_the_envelope_is_refused(
    tmp_path: Path, field: str, key: str
) -> None:
    value: Any = "jörg@example.com"
    if field == "headers":
        value = (("Sender", "jörg@example.com"),)
    with pytest.raises(CampaignError) as caught:
        compose(tmp_path, {"name": "Ann", "email": "ann@example.com"}, **{field: value})
    (problem,) = caught.value.problems
    assert problem.where == f"people.csv, row 1, {key}"
    assert "only from, to, cc and bcc addresses may" in problem.message


def intl_campaign(tmp_path: Path, server: SmtpTestServer) -> Path:
    rows = people(2)
    rows[1]["email"] = "zoë@example.org"
    rows[1]["name"] = "Zoë"
    return write_campaign(tmp_path, rows, server=server)


def test_sent_with_smtputf8_when_the_server_offers_it(
    tmp_path: Path, start_smtp_server: StartServer
) -> None:
    server = start_smtp_server(smtputf8=True)
    result = batchmail("run", intl_campaign(tmp_path, server), "--quiet")
    assert result.returncode == 0, result.stderr
    ascii_message, intl = server.messages
    assert "SMTPUTF8" not in ascii_message.mail_options and ascii_message.data.isascii()
    assert intl.rcpt_tos == ("zoë@example.org",)
    assert "SMTPUTF8" in intl.mail_options
    assert "To: =?utf-8?q?Zo=C3=AB?= <zoë@example.org>".encode() in intl.data


def test_fails_clearly_when_the_server_lacks_smtputf8(
    tmp_path: Path, start_smtp_server: StartServer
) -> None:
    server = start_smtp_server(smtputf8=False)
    campaign = intl_campaign(tmp_path, server)
    result = batchmail("run", campaign, "--quiet")
    assert result.returncode == 1, result.stderr
    assert [m.rcpt_tos for m in server.messages] == [("person1@example.org",)]
    (failed,) = status_json(campaign)["recipients"]
    assert failed["key"] == "zoë@example.org" and failed["status"] == "failed"
    assert "needs SMTPUTF8, which the server does not offer" in failed["reply"]

"""Several sender accounts end to end: ``smtp`` as a list, each message through the account
whose ``match`` takes its From address; two real aiosmtpd servers, the real ``batchmail``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from campaign_files import batchmail, parse, status_json, write_campaign
from servers import PASSWORD, USERNAME, SmtpTestServer, StartServer

from batchmail.accounts import account_for, matches, usage, with_own_limits
from batchmail.campaign import SmtpConfig, load_campaign
from batchmail.journal import Journal

FROM = "{{ team }} team <{{ team }}@{{ domain }}>"


def rows(teams: list[tuple[str, str]]) -> list[dict[str, str]]:
    """One row per (team, domain): its From address is team@domain."""
    return [
        {
            "email": f"person{i}@example.org",
            "name": f"Person {i}",
            "code": f"C{i:05d}",
            "team": team,
            "domain": domain,
        }
        for i, (team, domain) in enumerate(teams, 1)
    ]


def account(server: SmtpTestServer, **extra: Any) -> dict[str, Any]:
    return {
        "host": server.host,
        "port": server.port,
        "security": server.security,
        "timeout": 5,
        "data_timeout": 5,
        **extra,
    }


@pytest.fixture
def second_server(start_smtp_server: StartServer) -> SmtpTestServer:
    """Another plain recording server, on its own port."""
    return start_smtp_server()


def received(server: SmtpTestServer) -> dict[str, str]:
    """Message-ID -> To address of every message the server took; each Message-ID once."""
    ids = server.message_ids()
    assert len(ids) == len(set(ids)), "a message arrived twice"
    return {
        str(parse(m.data)["Message-ID"]): parse(m.data)["To"].addresses[0].addr_spec
        for m in server.messages
    }


def journal_ids(campaign: Path, name: str = "test-campaign") -> dict[str, str]:
    """Recipient key -> Message-ID, as the journal recorded them."""
    journal = Journal.open_readonly(campaign.parent / ".batchmail" / name / "journal.sqlite3")
    assert journal is not None
    with journal:
        return {entry.key: entry.message_id for entry in journal.entries()}


def test_each_message_goes_through_the_account_its_from_matches(
    tmp_path: Path, smtp_server: SmtpTestServer, second_server: SmtpTestServer
) -> None:
    teams = [
        ("sales", "sales.example.com"),
        ("help", "support.example.com"),
        ("Deals", "SALES.Example.com"),  # matched without regard to case
        ("news", "example.com"),  # the second account's exact address
        ("sales", "sales.example.com"),
    ]
    smtp = [
        account(smtp_server, match="*@sales.example.com"),
        account(second_server, match=["*@support.example.com", "news@example.com"]),
    ]
    campaign = write_campaign(tmp_path, rows(teams), smtp=smtp, message={"from": FROM})

    result = batchmail("run", campaign)

    assert result.returncode == 0, result.stderr
    assert "5 sent, 0 failed" in result.stdout
    assert f"{smtp_server.host}:{smtp_server.port}" in result.stdout
    assert f"{second_server.host}:{second_server.port}" in result.stdout
    ids = journal_ids(campaign)
    first, second = received(smtp_server), received(second_server)
    assert first == {ids[f"person{i}@example.org"]: f"person{i}@example.org" for i in (1, 3, 5)}
    assert second == {ids[f"person{i}@example.org"]: f"person{i}@example.org" for i in (2, 4)}
    assert {m.mail_from for m in smtp_server.messages} == {
        "sales@sales.example.com",
        "Deals@SALES.Example.com",
    }
    assert status_json(campaign)["counts"]["sent"] == 5
    assert batchmail("run", campaign).returncode == 0  # nothing left: nobody mailed twice
    assert len(smtp_server.messages) == 3 and len(second_server.messages) == 2


def test_a_from_no_account_takes_is_a_check_error_and_nothing_is_sent(
    tmp_path: Path, smtp_server: SmtpTestServer, second_server: SmtpTestServer
) -> None:
    teams = [
        ("sales", "sales.example.com"),
        ("help", "support.example.com"),
        ("ops", "elsewhere.example.net"),
    ]
    smtp = [
        account(smtp_server, match="*@sales.example.com"),
        account(second_server, match="*@support.example.com"),
    ]
    campaign = write_campaign(tmp_path, rows(teams), smtp=smtp, message={"from": FROM})

    checked = batchmail("check", campaign)
    run = batchmail("run", campaign)

    assert checked.returncode == 2 and run.returncode == 2
    for output in (checked.stderr, run.stderr):
        assert "people.csv, row 3, message.from" in output
        assert "ops@elsewhere.example.net matches no sender account" in output
        assert "smtp[0].match: *@sales.example.com" in output
        assert "row 1" not in output and "row 2" not in output
        assert "Traceback" not in output
    assert smtp_server.commands == [] and second_server.commands == []


def test_each_account_keeps_its_own_daily_limit(
    tmp_path: Path, smtp_server: SmtpTestServer, second_server: SmtpTestServer
) -> None:
    # Three messages through smtp[0] (no limit) go first; smtp[1] may send 2 a day. Were the
    # limit counted over the whole journal, smtp[1] would send nothing on day one.
    teams = [("sales", "sales.example.com")] * 3 + [("help", "support.example.com")] * 5
    smtp = [
        account(smtp_server, match="*@sales.example.com"),
        account(second_server, match="*@support.example.com", daily_limit=2),
    ]
    campaign = write_campaign(tmp_path, rows(teams), smtp=smtp, message={"from": FROM})

    day_one = batchmail("run", campaign, env={"BATCHMAIL_NOW": "2026-03-02T09:00:00+00:00"})

    assert day_one.returncode == 1, day_one.stderr
    assert "5 sent" in day_one.stdout
    assert len(smtp_server.messages) == 3 and len(second_server.messages) == 2
    assert "daily limit of 2 messages reached for smtp[1] (*@support.example.com)" in day_one.stderr
    assert "run again after 2026-03-03 09:00 UTC" in day_one.stderr
    assert "3 not attempted yet" in day_one.stderr

    later = batchmail("run", campaign, env={"BATCHMAIL_NOW": "2026-03-02T20:00:00+00:00"})
    assert later.returncode == 1
    assert len(second_server.messages) == 2  # still within the same 24 hours

    day_two = batchmail("run", campaign, env={"BATCHMAIL_NOW": "2026-03-03T09:00:01+00:00"})
    assert day_two.returncode == 1
    assert len(second_server.messages) == 4 and len(smtp_server.messages) == 3

    day_three = batchmail("run", campaign, env={"BATCHMAIL_NOW": "2026-03-04T10:00:00+00:00"})
    assert day_three.returncode == 0, day_three.stderr
    assert "daily limit" not in day_three.stderr
    assert sorted(received(second_server).values()) == [
        f"person{i}@example.org" for i in range(4, 9)
    ]
    assert status_json(campaign)["counts"]["sent"] == 8


def test_send_daily_limit_holds_for_each_account(
    tmp_path: Path, smtp_server: SmtpTestServer, second_server: SmtpTestServer
) -> None:
    teams = [("sales", "sales.example.com")] * 3 + [("help", "support.example.com")] * 3
    smtp = [
        account(smtp_server, match="*@sales.example.com"),
        account(second_server, match="*@support.example.com"),
    ]
    campaign = write_campaign(
        tmp_path, rows(teams), smtp=smtp, message={"from": FROM}, send={"daily_limit": 2}
    )

    result = batchmail("run", campaign, env={"BATCHMAIL_NOW": "2026-03-02T09:00:00+00:00"})

    assert result.returncode == 1
    assert len(smtp_server.messages) == 2 and len(second_server.messages) == 2
    assert "for smtp[0] (*@sales.example.com)" in result.stderr
    assert "for smtp[1] (*@support.example.com)" in result.stderr


def test_each_account_authenticates_with_its_own_password(
    tmp_path: Path,
    smtp_server_starttls_requiring_auth: SmtpTestServer,
    smtp_server: SmtpTestServer,
) -> None:
    secure = smtp_server_starttls_requiring_auth
    teams = [("sales", "sales.example.com"), ("help", "support.example.com")]
    smtp = [
        account(
            secure,
            match="*@sales.example.com",
            ca_file=str(secure.ca_file),
            username=USERNAME,
            password_env="SALES_PW",
        ),
        account(smtp_server),  # the last account may leave out match: it takes the rest
    ]
    campaign = write_campaign(tmp_path, rows(teams), smtp=smtp, message={"from": FROM})

    missing = batchmail("run", campaign, "--verbose")
    assert missing.returncode == 2
    assert "smtp[0].password_env: the environment variable SALES_PW is not set" in missing.stderr
    assert secure.commands == [] and smtp_server.commands == []

    result = batchmail("run", campaign, "--verbose", env={"SALES_PW": PASSWORD})

    assert result.returncode == 0, result.stderr
    assert len(secure.messages) == 1 and secure.messages[0].tls
    assert len(smtp_server.messages) == 1
    assert PASSWORD not in result.stdout + result.stderr


def test_test_send_goes_through_each_rows_account(
    tmp_path: Path, smtp_server: SmtpTestServer, second_server: SmtpTestServer
) -> None:
    teams = [("sales", "sales.example.com"), ("help", "support.example.com")]
    smtp = [
        account(smtp_server, match="*@sales.example.com"),
        account(second_server, match="*@support.example.com"),
    ]
    campaign = write_campaign(tmp_path, rows(teams), smtp=smtp, message={"from": FROM})

    result = batchmail("run", campaign, "--test-to", "qa@example.net")

    assert result.returncode == 0, result.stderr
    assert [m.rcpt_tos for m in smtp_server.messages] == [("qa@example.net",)]
    assert [m.rcpt_tos for m in second_server.messages] == [("qa@example.net",)]
    assert smtp_server.messages[0].mail_from == "sales@sales.example.com"


@pytest.mark.parametrize(
    ("smtp", "expected"),
    [
        ([], "smtp: an empty list: give at least one account"),
        (
            [{"host": "a.example.com"}, {"host": "b.example.com", "match": "*@b.example.com"}],
            "smtp[0].match: missing: every account but the last needs `match`",
        ),
        (
            [{"match": "*@a.example.com"}, {"host": "b.example.com"}],
            "smtp[0].host: missing, line 3",
        ),
        (
            [{"host": "a.example.com", "match": "a.example.com"}, {"host": "b.example.com"}],
            'smtp[0].match: expected a From address or a pattern such as "*@sales.example.com"',
        ),
        (
            [{"host": "a.example.com", "match": "*@a.example.com", "port": "x"}, "embedded"],
            "smtp[1]: expected a mapping, got str 'embedded'",
        ),
        (
            [{"host": "a.example.com", "match": "*@a.example.com", "daily_limit": -1}],
            "smtp[0].daily_limit: expected an integer of at least 0, got -1",
        ),
        (
            [{"host": "a.example.com", "mtach": "*@a.example.com"}],
            "smtp[0].mtach: unknown key (did you mean 'match'?)",
        ),
    ],
)
def test_account_list_errors_name_the_account(
    tmp_path: Path, smtp: list[Any], expected: str
) -> None:
    campaign = write_campaign(tmp_path, rows([("sales", "a.example.com")]), smtp=smtp)

    result = batchmail("check", campaign)

    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_the_loader_keeps_a_single_mapping_as_one_account(tmp_path: Path) -> None:
    campaign = write_campaign(
        tmp_path,
        rows([("sales", "a.example.com")]),
        smtp={"host": "smtp.example.com", "daily_limit": 7, "rate": 1.5},
    )
    loaded = load_campaign(campaign)
    assert loaded.smtp_accounts == (loaded.smtp,)
    assert loaded.smtp.key_path == "smtp" and loaded.smtp.match == ()
    assert loaded.smtp.daily_limit == 7 and loaded.smtp.rate == 1.5


def test_matching_and_usage() -> None:
    sales = SmtpConfig("a", 25, "none", match=("*@sales.example.com",), key_path="smtp[0]")
    news = SmtpConfig("b", 25, "none", match=("News@Example.com",), key_path="smtp[1]")
    rest = SmtpConfig("c", 25, "none", key_path="smtp[2]")
    accounts = (sales, news, rest)
    assert matches(sales, "x@SALES.example.COM") and not matches(sales, "x@sales.example.com.evil")
    assert not matches(sales, "sales.example.com@evil.org")
    assert account_for(accounts, "news@example.com") == 1
    assert account_for(accounts, "anyone@else.org") == 2
    assert account_for(accounts[:2], "anyone@else.org") is None
    by_sender = [
        ("a@sales.example.com", 2, "2026-01-02T00:00:00+00:00"),
        ("b@Sales.Example.com", 1, "2026-01-01T00:00:00+00:00"),
        ("news@example.com", 5, "2025-12-31T00:00:00+00:00"),
    ]
    assert usage(accounts, 0, by_sender) == (3, "2026-01-01T00:00:00+00:00")
    assert usage(accounts, 1, by_sender) == (5, "2025-12-31T00:00:00+00:00")
    assert usage(accounts, 2, by_sender) == (0, None)


def test_an_account_s_own_limits_replace_send_s(tmp_path: Path) -> None:
    campaign = load_campaign(
        write_campaign(
            tmp_path,
            rows([("sales", "a.example.com")]),
            smtp=[
                {"host": "a.example.com", "match": "*@a.example.com", "rate": 2, "daily_limit": 9},
                {"host": "b.example.com"},
            ],
            send={"rate": 5, "daily_limit": 100},
        )
    )
    first, second = campaign.smtp_accounts
    assert (first.key_path, second.key_path) == ("smtp[0]", "smtp[1]")
    own = with_own_limits(campaign, first)
    assert (own.send.rate, own.send.daily_limit, own.smtp) == (2.0, 9, first)
    assert own.send.retries == campaign.send.retries
    default = with_own_limits(campaign, second)
    assert (default.send.rate, default.send.daily_limit) == (5.0, 100)

"""The campaign loader: defaults, paths, and a clear located message for every mistake."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from batchmail.campaign import load_campaign
from batchmail.errors import CampaignError


def write_campaign(
    directory: Path, yaml_text: str, csv_text: str = "email,name\na@x.org,A\n"
) -> Path:
    (directory / "people.csv").write_text(csv_text, encoding="utf-8")
    (directory / "body.txt.j2").write_text("Hi {{ name }}\n", encoding="utf-8")
    path = directory / "campaign.yaml"
    path.write_text(textwrap.dedent(yaml_text), encoding="utf-8")
    return path


MINIMAL = """\
smtp:
  host: smtp.example.com
recipients:
  file: people.csv
message:
  from: a@example.com
  to: "{{ email }}"
  subject: Hello
  text: body.txt.j2
"""


def problems_of(path: Path) -> str:
    with pytest.raises(CampaignError) as caught:
        load_campaign(path)
    return str(caught.value)


def test_minimal_campaign_gets_documented_defaults(tmp_path: Path) -> None:
    campaign = load_campaign(write_campaign(tmp_path, MINIMAL))
    assert campaign.name == "campaign"
    assert campaign.smtp.security == "starttls" and campaign.smtp.port == 587
    assert campaign.smtp.timeout == 30 and campaign.smtp.data_timeout == 600
    assert campaign.recipients.file == tmp_path / "people.csv"
    assert campaign.recipients.encoding == "utf-8" and campaign.recipients.key == "email"
    assert campaign.message.text == tmp_path / "body.txt.j2" and campaign.message.html is None
    assert campaign.send.rate == 0 and campaign.send.retries == 3
    assert campaign.state_dir == tmp_path / ".batchmail" / "campaign"


@pytest.mark.parametrize(("security", "port"), [("tls", 465), ("none", 25), ("starttls", 587)])
def test_port_defaults_follow_security(tmp_path: Path, security: str, port: int) -> None:
    text = MINIMAL.replace("  host: smtp.example.com", f"  host: h\n  security: {security}")
    assert load_campaign(write_campaign(tmp_path, text)).smtp.port == port


def test_embedded_smtp(tmp_path: Path) -> None:
    text = MINIMAL.replace("smtp:\n  host: smtp.example.com", "smtp: embedded")
    assert load_campaign(write_campaign(tmp_path, text)).smtp.embedded


def test_wrong_type_names_key_path_and_line(tmp_path: Path) -> None:
    text = MINIMAL.replace("  host: smtp.example.com", "  host: smtp.example.com\n  port: abc")
    assert "smtp.port: expected an integer, line 3" in problems_of(write_campaign(tmp_path, text))


def test_misspelt_key_is_refused_with_a_suggestion(tmp_path: Path) -> None:
    text = MINIMAL + "  atachments: [a.pdf]\n"
    message = problems_of(write_campaign(tmp_path, text))
    assert "message.atachments: unknown key (did you mean 'attachments'?), line 10" in message


def test_every_problem_is_reported_not_just_the_first(tmp_path: Path) -> None:
    text = MINIMAL.replace("  file: people.csv", "  file: missing.csv\n  encoding: klingon")
    text = text.replace("  subject: Hello\n", "") + "send:\n  rate: -1\n  retries: many\n"
    message = problems_of(write_campaign(tmp_path, text))
    for expected in (
        "recipients.file: missing.csv not found",
        "recipients.encoding: unknown encoding 'klingon'",
        "message.subject: missing",
        "send.rate:",
        "send.retries: expected an integer",
    ):
        assert expected in message


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    path = write_campaign(tmp_path, "smtp: [embedded\nrecipients: 2\n")
    message = problems_of(path)
    assert "campaign.yaml, line 2" in message and "YAML syntax" in message


def test_duplicate_yaml_key_is_refused(tmp_path: Path) -> None:
    text = MINIMAL.replace("  subject: Hello", "  subject: Hello\n  subject: Again")
    assert "duplicate key 'subject'" in problems_of(write_campaign(tmp_path, text))


def test_username_over_plaintext_needs_insecure_auth(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        "  host: smtp.example.com", "  host: relay\n  security: none\n  username: bob"
    )
    assert "smtp.username: refusing to send a password" in problems_of(
        write_campaign(tmp_path, text)
    )
    allowed = text.replace("  username: bob", "  username: bob\n  insecure_auth: true")
    assert load_campaign(write_campaign(tmp_path, allowed)).smtp.insecure_auth


def test_needs_a_body_template(tmp_path: Path) -> None:
    text = MINIMAL.replace("  text: body.txt.j2\n", "")
    assert "needs a `text` or an `html` template" in problems_of(write_campaign(tmp_path, text))


def test_not_a_mapping_and_missing_file(tmp_path: Path) -> None:
    assert "expected a mapping" in problems_of(write_campaign(tmp_path, "- a\n- b\n"))
    assert "campaign file not found" in problems_of(tmp_path / "nope.yaml")


def test_bad_name_is_refused(tmp_path: Path) -> None:
    text = "name: ../escape\n" + MINIMAL
    assert "name: '../escape' may hold only" in problems_of(write_campaign(tmp_path, text))


def test_headers_and_attachments_are_read(tmp_path: Path) -> None:
    text = (
        MINIMAL + "  attachments:\n    - a.pdf\n    - 'inv/{{ id }}.pdf'\n"
        "  headers:\n    X-Campaign: 2026\n"
    )
    campaign = load_campaign(write_campaign(tmp_path, text))
    assert campaign.message.attachments == ("a.pdf", "inv/{{ id }}.pdf")
    assert campaign.message.headers == (("X-Campaign", "2026"),)

"""Compiling and rendering a campaign's templates with real template files."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from batchmail.addresses import parse_address_list, reveal
from batchmail.campaign import Campaign, MessageConfig, RecipientsConfig, SendConfig, SmtpConfig
from batchmail.errors import CampaignError
from batchmail.recipients import Recipient
from batchmail.render import Renderer

TEXT = "Hello {{ name }},\nyour code is {{ code }}.\n"
HTML = "<p>Hello {{ name }}</p>\n"


def make_campaign(
    tmp_path: Path, text: str | None = TEXT, html: str | None = HTML, **message: Any
) -> Campaign:
    text_path = html_path = None
    if text is not None:
        text_path = tmp_path / "welcome.txt.j2"
        text_path.write_text(text, encoding="utf-8")
    if html is not None:
        html_path = tmp_path / "welcome.html.j2"
        html_path.write_text(html, encoding="utf-8")
    fields: dict[str, Any] = {
        "from_": "Team <team@example.com>",
        "to": "{{ name }} <{{ email }}>",
        "subject": "Welcome, {{ name }}",
        "text": text_path,
        "html": html_path,
    }
    fields.update(message)
    return Campaign(
        path=tmp_path / "welcome.yaml",
        name="welcome",
        smtp=SmtpConfig("localhost", 25, "none"),
        recipients=RecipientsConfig(tmp_path / "welcome.csv"),
        message=MessageConfig(**fields),
        send=SendConfig(),
        lines={"message.subject": 7, "message.text": 9, "message.html": 10, "message": 3},
    )


def recipient(row_number: int = 1, **fields: str) -> Recipient:
    values = {"email": "ann@example.com", "name": "Ann", "code": "A1"}
    values.update(fields)
    return Recipient(row_number, values["email"], values)


def test_renders_every_field(tmp_path: Path) -> None:
    campaign = make_campaign(
        tmp_path,
        cc="{{ name }}.cc@example.com",
        bcc="audit@example.com",
        reply_to="help@example.com",
        attachments=("files/guide.pdf", "invoices/{{ code }}.pdf"),
        headers=(("X-Code", "{{ code }}"),),
    )
    rendered = Renderer.compile(campaign).render(recipient())
    assert rendered.from_ == "Team <team@example.com>"
    # Address fields hold CSV values protected (see test_address_values_are_protected).
    assert reveal(rendered.to) == "Ann <ann@example.com>"
    assert reveal(rendered.cc) == "Ann.cc@example.com"
    assert rendered.bcc == "audit@example.com"
    assert rendered.reply_to == "help@example.com"
    assert rendered.subject == "Welcome, Ann"
    assert rendered.text == "Hello Ann,\nyour code is A1.\n"  # trailing newline kept
    assert rendered.html == "<p>Hello Ann</p>\n"
    assert rendered.attachments == ("files/guide.pdf", "invoices/A1.pdf")
    assert rendered.headers == (("X-Code", "A1"),)


def test_html_is_autoescaped_and_text_and_headers_are_not(tmp_path: Path) -> None:
    rendered = Renderer.compile(make_campaign(tmp_path)).render(recipient(name="<b>Ann</b> & Co"))
    assert rendered.html == "<p>Hello &lt;b&gt;Ann&lt;/b&gt; &amp; Co</p>\n"
    assert rendered.text is not None and rendered.text.startswith("Hello <b>Ann</b> & Co,")
    assert rendered.subject == "Welcome, <b>Ann</b> & Co"


def test_context_has_row_and_row_number(tmp_path: Path) -> None:
    text = "{{ row['first name'] }} is row {{ row_number }} of {{ row.email }}\n"
    renderer = Renderer.compile(make_campaign(tmp_path, text=text, html=None))
    rendered = renderer.render(recipient(7, **{"first name": "Ann", "row": "hidden"}))
    assert rendered.text == "Ann is row 7 of ann@example.com\n"
    assert rendered.html is None


def test_jinja_globals_are_there_and_a_column_hides_one(tmp_path: Path) -> None:
    text = (
        "{% set ns = namespace(n=0) %}{% for i in range(3) %}{% set ns.n = ns.n + i %}"
        "{% endfor %}{{ ns.n }} {{ dict(a=1)['a'] }} {{ cycler }}\n"
    )
    renderer = Renderer.compile(make_campaign(tmp_path, text=text, html=None))
    # A row's column of a global's name wins, as in any Jinja context.
    assert renderer.render(recipient(1, cycler="mine")).text == "3 1 mine\n"
    assert renderer.render(recipient(2)).text.startswith("3 1 <class ")


def test_undefined_variable_names_template_line_and_row(tmp_path: Path) -> None:
    text = "Hello,\n\n{% if true %}\n  {{ nmae }}\n{% endif %}\n"
    renderer = Renderer.compile(make_campaign(tmp_path, text=text))
    with pytest.raises(CampaignError) as caught:
        renderer.render(recipient(42))
    assert str(caught.value) == (
        "welcome.csv, row 42: template welcome.txt.j2, line 4: 'nmae' is undefined; "
        "did you mean 'name'? columns: email, name, code"
    )


def test_every_failing_field_of_a_row_is_reported(tmp_path: Path) -> None:
    campaign = make_campaign(
        tmp_path,
        subject="Hi {{ nickname }}",
        html="<p>\n{{ missing.attr }}</p>",
        headers=(("X-Code", "{{ 1 / 0 }}"),),
        attachments=("{{ invoice }}",),
    )
    with pytest.raises(CampaignError) as caught:
        Renderer.compile(campaign).render(recipient(3))
    messages = [str(p) for p in caught.value.problems]
    assert messages == [
        "welcome.csv, row 3: template message.subject, line 1: 'nickname' is undefined; "
        "did you mean 'name'? columns: email, name, code",
        "welcome.csv, row 3: template welcome.html.j2, line 2: 'missing' is undefined; "
        "columns: email, name, code",
        "welcome.csv, row 3: template message.attachments[0], line 1: 'invoice' is undefined; "
        "columns: email, name, code",
        "welcome.csv, row 3: template message.headers.X-Code, line 1: "
        "ZeroDivisionError: division by zero",
    ]


def test_an_empty_value_is_not_undefined(tmp_path: Path) -> None:
    rendered = Renderer.compile(make_campaign(tmp_path)).render(recipient(name=""))
    assert rendered.subject == "Welcome, "


def test_syntax_errors_are_all_reported_and_located(tmp_path: Path) -> None:
    text = "line 1\nline 2\nline 3\n{{ name }\n"
    campaign = make_campaign(
        tmp_path, text=text, html="{% if %}", subject="Hi {{ name | nosuchfilter }}"
    )
    with pytest.raises(CampaignError) as caught:
        Renderer.compile(campaign)
    wheres = [p.where for p in caught.value.problems]
    assert wheres == [
        "welcome.yaml, message.subject, line 7",
        "welcome.txt.j2, line 4",
        "welcome.html.j2, line 1",
    ]
    assert "nosuchfilter" in caught.value.problems[0].message
    assert "(message.text)" in caught.value.problems[1].message


def test_missing_and_undecodable_template_files(tmp_path: Path) -> None:
    campaign = make_campaign(tmp_path)
    (tmp_path / "welcome.txt.j2").unlink()
    (tmp_path / "welcome.html.j2").write_bytes(b"<p>caf\xe9</p>")
    with pytest.raises(CampaignError) as caught:
        Renderer.compile(campaign)
    first, second = caught.value.problems
    assert first.where == "welcome.yaml, message.text, line 9"
    assert f"template file not found: {tmp_path / 'welcome.txt.j2'}" in first.message
    assert second.where == "welcome.yaml, message.html, line 10"
    assert "is not UTF-8" in second.message and "welcome.html.j2" in second.message


def test_a_template_directory_is_refused(tmp_path: Path) -> None:
    campaign = make_campaign(tmp_path, html=None)
    campaign = replace(campaign, message=replace(campaign.message, text=tmp_path))
    with pytest.raises(CampaignError, match="is a directory"):
        Renderer.compile(campaign)


def test_a_byte_order_mark_does_not_reach_the_body(tmp_path: Path) -> None:
    campaign = make_campaign(tmp_path, html=None)
    (tmp_path / "welcome.txt.j2").write_bytes(b"\xef\xbb\xbfHi {{ name }}\n")
    assert Renderer.compile(campaign).render(recipient()).text == "Hi Ann\n"


def test_a_campaign_without_body_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CampaignError, match="needs a `text` or an `html` template"):
        Renderer.compile(make_campaign(tmp_path, text=None, html=None))


def test_static_attachments_are_those_without_template_syntax(tmp_path: Path) -> None:
    campaign = make_campaign(
        tmp_path,
        attachments=("../files/guide{1}.pdf", "inv/{{ code }}.pdf", "{% raw %}x{% endraw %}"),
    )
    renderer = Renderer.compile(campaign)
    assert [renderer.is_static_attachment(i) for i in range(3)] == [True, False, False]


def test_templates_are_compiled_once(tmp_path: Path) -> None:
    campaign = make_campaign(tmp_path)
    renderer = Renderer.compile(campaign)
    # Changing the file after compile() must not change what is rendered.
    (tmp_path / "welcome.txt.j2").write_text("changed {{ name }}\n", encoding="utf-8")
    assert renderer.render(recipient()).text == "Hello Ann,\nyour code is A1.\n"


@pytest.mark.parametrize("field", ["from_", "to", "cc", "bcc", "reply_to"])
def test_address_values_are_protected(tmp_path: Path, field: str) -> None:
    campaign = make_campaign(tmp_path, **{field: "{{ name }} <{{ email }}>"})
    rendered = Renderer.compile(campaign).render(recipient(name='Doe, "J" <x@evil.com>;'))
    value = getattr(rendered, field)
    assert not set(value) & set(',;<>"@') - set("<>")  # only the author's < and > are real
    assert value.count("<") == value.count(">") == 1
    assert reveal(value) == 'Doe, "J" <x@evil.com>; <ann@example.com>'
    (address,) = parse_address_list(value)
    assert (address.display_name, address.addr_spec) == (
        'Doe, "J" <x@evil.com>;',
        "ann@example.com",
    )


def test_subject_headers_and_paths_are_not_protected(tmp_path: Path) -> None:
    campaign = make_campaign(
        tmp_path,
        subject="{{ name }}",
        headers=(("X-Tag", "{{ name }}"), ("Sender", "{{ name }}")),
        attachments=("{{ name }}",),
    )
    rendered = Renderer.compile(campaign).render(recipient(name="a,b<c>"))
    assert rendered.subject == "a,b<c>"
    assert rendered.attachments == ("a,b<c>",)
    assert rendered.headers[0] == ("X-Tag", "a,b<c>")
    assert rendered.headers[1][1] != "a,b<c>"  # Sender is an address header
    assert reveal(rendered.headers[1][1]) == "a,b<c>"


def test_address_list_marks_a_value_as_structure(tmp_path: Path) -> None:
    campaign = make_campaign(tmp_path, cc="{{ code | address_list }}, {{ name }} <z@example.com>")
    rendered = Renderer.compile(campaign).render(recipient(code="a@x.org, B <b@y.org>", name="c,d"))
    addresses = parse_address_list(rendered.cc)
    assert [(a.display_name, a.addr_spec) for a in addresses] == [
        ("", "a@x.org"),
        ("B", "b@y.org"),
        ("c,d", "z@example.com"),  # the unmarked value stays text
    ]


def test_a_reserved_character_in_an_address_value_is_a_located_problem(tmp_path: Path) -> None:
    renderer = Renderer.compile(make_campaign(tmp_path))
    with pytest.raises(CampaignError) as caught:
        renderer.render(recipient(5, name="x\U000f003cy"))
    (problem,) = caught.value.problems
    assert problem.where == "welcome.csv, row 5, message.to"
    assert "U+F003C" in problem.message and "reserves" in problem.message


def test_a_template_without_syntax_renders_as_jinja_would(tmp_path: Path) -> None:
    campaign = make_campaign(
        tmp_path, text="Hello\n", html=None, from_="Team <team@example.com>\n", subject="Hi"
    )
    rendered = Renderer.compile(campaign).render(recipient())
    assert rendered.text == "Hello\n"  # a body keeps its final newline
    assert rendered.from_ == "Team <team@example.com>"  # a header value does not
    assert rendered.subject == "Hi"

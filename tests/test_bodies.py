"""Bodies end to end: Markdown, a text part made from HTML, inlined CSS and embedded images,
through the real ``batchmail`` process and a real SMTP server, the messages parsed back."""

from __future__ import annotations

import os
import re
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from campaign_files import batchmail, parse, people, write_campaign
from servers import SmtpTestServer

from batchmail.campaign import load_campaign
from batchmail.compose import Composer
from batchmail.recipients import Recipient
from batchmail.render import Renderer

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
GIF = b"GIF89a" + bytes(range(200))

MARKDOWN = """\
# Hello {{ name }}

Your code is **{{ code }}**.

- first
- second

[Unsubscribe]({{ unsubscribe_url }})
"""


def markdown_campaign(
    directory: Path, server: SmtpTestServer, rows: list[dict[str, str]], **message: Any
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "body.md.j2").write_text(message.pop("source", MARKDOWN), encoding="utf-8")
    campaign = write_campaign(
        directory,
        rows,
        server=server,
        html=None,
        message={
            "markdown": "body.md.j2",
            "unsubscribe": {"url": "https://example.org/u/{{ code }}"},
            **message,
        },
    )
    # write_campaign always names a text template; a Markdown campaign here has none.
    text = campaign.read_text(encoding="utf-8").replace("  text: body.txt.j2\n", "")
    campaign.write_text(text, encoding="utf-8")
    return campaign


def sent(server: SmtpTestServer) -> list[EmailMessage]:
    return [parse(received.data) for received in server.messages]


def structure(message: EmailMessage) -> list[str]:
    return [part.get_content_type() for part in message.walk()]


def run_ok(campaign: Path) -> None:
    result = batchmail("run", campaign)
    assert result.returncode == 0, result.stderr


def refused(campaign: Path, server: SmtpTestServer) -> str:
    """The one problem that stops ``check`` and ``run``; nothing was sent."""
    for command in ("check", "run"):
        result = batchmail(command, campaign)
        assert result.returncode == 2, result.stdout
        assert "Traceback" not in result.stderr
    assert server.messages == [] and server.commands == []
    heading, *problems = result.stderr.strip().splitlines()
    assert heading == "batchmail: 1 problem, nothing was sent:"
    (problem,) = problems
    return problem.strip()


# --- Markdown ---------------------------------------------------------------------------------


def test_markdown_gives_the_html_part_and_its_source_is_the_text_part(
    tmp_path: Path, smtp_server: SmtpTestServer
) -> None:
    rows = people(2)
    rows[1]["name"] = "<b>Bold</b> *star* & [link](https://evil.example) # 1."
    campaign = markdown_campaign(tmp_path, smtp_server, rows)

    run_ok(campaign)

    first, second = sent(smtp_server)
    assert structure(first) == ["multipart/alternative", "text/plain", "text/html"]
    text = first.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert text == MARKDOWN.replace("{{ name }}", "Person 1").replace(
        "{{ code }}", "C00001"
    ).replace("{{ unsubscribe_url }}", "https://example.org/u/C00001")
    html = first.get_body(("html",)).get_content()
    assert "<h1>Hello Person 1</h1>" in html
    assert "<strong>C00001</strong>" in html
    assert "<li>first</li>" in html
    assert '<a href="https://example.org/u/C00001">Unsubscribe</a>' in html
    # A CSV value is text in the HTML part (escaped for Markdown and HTML), as it is in the
    # text part.
    html = second.get_body(("html",)).get_content()
    assert (
        "<h1>Hello &lt;b&gt;Bold&lt;/b&gt; *star* &amp; [link](https://evil.example) # 1.</h1>"
        in html
    )
    assert "<b>" not in html and 'evil.example"' not in html and "<em>" not in html
    text = second.get_body(("plain",)).get_content()
    assert "# Hello <b>Bold</b> *star* & [link](https://evil.example) # 1." in text


def test_markdown_with_a_text_template_keeps_the_text_template(
    tmp_path: Path, smtp_server: SmtpTestServer
) -> None:
    campaign = markdown_campaign(tmp_path, smtp_server, people(1))
    campaign.write_text(
        campaign.read_text(encoding="utf-8").replace(
            "  markdown: body.md.j2\n", "  markdown: body.md.j2\n  text: body.txt.j2\n"
        ),
        encoding="utf-8",
    )

    run_ok(campaign)

    (message,) = sent(smtp_server)
    assert (
        message.get_body(("plain",)).get_content()
        == "Dear Person 1,\r\n\r\nyour code is C00001.\r\n"
    )
    assert "<h1>Hello Person 1</h1>" in message.get_body(("html",)).get_content()


def test_markdown_and_html_together_are_refused(
    tmp_path: Path, smtp_server: SmtpTestServer
) -> None:
    (tmp_path / "body.md.j2").write_text(MARKDOWN, encoding="utf-8")
    campaign = write_campaign(
        tmp_path, people(1), server=smtp_server, message={"markdown": "body.md.j2"}
    )

    problem = refused(campaign, smtp_server)

    assert problem.startswith(
        "campaign.yaml: message.markdown: give `markdown` or `html`, not both"
    )


# --- a text part for an HTML-only campaign ---------------------------------------------------


def test_an_html_only_campaign_gets_a_readable_text_part(
    tmp_path: Path, smtp_server: SmtpTestServer
) -> None:
    html = (
        "<h2>News for {{ name }}</h2>\n<p>Your code is <b>{{ code }}</b>. "
        '<a href="https://example.org/more">Read more</a></p>\n'
        "<ul><li>one</li><li>two</li></ul>\n"
    )
    campaign = write_campaign(tmp_path, people(1), server=smtp_server, html=html)
    campaign.write_text(
        campaign.read_text(encoding="utf-8").replace("  text: body.txt.j2\n", ""),
        encoding="utf-8",
    )

    run_ok(campaign)

    (message,) = sent(smtp_server)
    assert structure(message) == ["multipart/alternative", "text/plain", "text/html"]
    text = message.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert text == (
        "## News for Person 1\n\n"
        "Your code is **C00001**. [Read more](https://example.org/more)\n\n"
        "  * one\n  * two\n"
    )
    assert "<h2>News for Person 1</h2>" in message.get_body(("html",)).get_content()


# --- CSS ---------------------------------------------------------------------------------------

STYLED = """\
<html><head><style>
p { color: #c00; }
.note { font-size: 12px; }
@media (max-width: 600px) { p { color: blue; } }
</style></head>
<body><p>Dear {{ name }}</p><p class="note">code {{ code }}</p></body></html>
"""


def test_css_of_style_blocks_is_inlined(tmp_path: Path, smtp_server: SmtpTestServer) -> None:
    campaign = write_campaign(tmp_path, people(1), server=smtp_server, html=STYLED)

    run_ok(campaign)

    html = sent(smtp_server)[0].get_body(("html",)).get_content()
    assert '<p style="color: #c00;">Dear Person 1</p>' in html
    assert '<p class="note" style="color: #c00;font-size: 12px;">code C00001</p>' in html
    # Only the @media rule, which no style attribute can hold, stays in a <style>.
    (style,) = re.findall(r"<style>(.*?)</style>", html, re.S)
    assert "@media" in style and ".note" not in style


def test_inline_css_false_leaves_the_html_as_written(
    tmp_path: Path, smtp_server: SmtpTestServer
) -> None:
    campaign = write_campaign(
        tmp_path, people(1), server=smtp_server, html=STYLED, message={"inline_css": False}
    )

    run_ok(campaign)

    html = sent(smtp_server)[0].get_body(("html",)).get_content()
    assert html.replace("\r\n", "\n") == STYLED.replace("{{ name }}", "Person 1").replace(
        "{{ code }}", "C00001"
    )


def test_css_in_a_markdown_body_is_inlined(tmp_path: Path, smtp_server: SmtpTestServer) -> None:
    source = "<style>h1 { color: green; }</style>\n\n# Hi {{ name }}\n"
    campaign = markdown_campaign(tmp_path, smtp_server, people(1), source=source)

    run_ok(campaign)

    html = sent(smtp_server)[0].get_body(("html",)).get_content()
    assert '<h1 style="color: green;">Hi Person 1</h1>' in html and "<style>" not in html


# --- inline images -----------------------------------------------------------------------------

IMAGES_HTML = """\
<p>Hello {{ name }}</p>
<img src="logo.png" alt="Logo"><img src='img/dot%20one.gif'>
<img src="logo.png" alt="again">
<img src="https://example.org/remote.png"><img src="data:image/gif;base64,R0lGOD">
<img src="cid:someone-else@example.org"><img src="//cdn.example.org/x.png">
"""


def images_campaign(directory: Path, server: SmtpTestServer, html: str, **kwargs: Any) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "logo.png").write_bytes(PNG)
    (directory / "img").mkdir(exist_ok=True)
    (directory / "img" / "dot one.gif").write_bytes(GIF)
    return write_campaign(
        directory, kwargs.pop("rows", people(2)), server=server, html=html, **kwargs
    )


def test_relative_images_are_embedded_and_referenced_by_cid(
    tmp_path: Path, smtp_server: SmtpTestServer
) -> None:
    campaign = images_campaign(tmp_path, smtp_server, IMAGES_HTML)

    run_ok(campaign)

    content_ids = []
    for message in sent(smtp_server):
        assert structure(message) == [
            "multipart/alternative",
            "text/plain",
            "multipart/related",
            "text/html",
            "image/png",
            "image/gif",
        ]
        related = message.get_payload()[1]
        assert related.get_param("type") == "text/html"  # RFC 2387: the root's type
        html_part, *images = related.iter_parts()
        html = html_part.get_content()
        by_cid = {image["Content-ID"].strip("<>"): image for image in images}
        sources = re.findall(r'src="([^"]*)"', html)
        cids = [src[4:] for src in sources if src.startswith("cid:") and "someone" not in src]
        assert len(cids) == 3 and cids[0] == cids[2] and set(cids) == set(by_cid)
        logo, dot = by_cid[cids[0]], by_cid[cids[1]]
        assert logo.get_content() == PNG and logo.get_filename() == "logo.png"
        assert dot.get_content() == GIF and dot.get_filename() == "dot one.gif"
        for image in images:
            assert image.get_content_disposition() == "inline"
        # URLs are left alone.
        for url in (
            "https://example.org/remote.png",
            "data:image/gif;base64,R0lGOD",
            "cid:someone-else@example.org",
            "//cdn.example.org/x.png",
        ):
            assert url in sources
        assert "logo.png" not in html.replace('filename="logo.png"', "")
        assert "[" not in message.get_body(("plain",)).get_content()  # images left out
        content_ids.append(sorted(by_cid))
    assert content_ids[0] == content_ids[1]  # the same image, the same part, in every message


def test_images_of_a_markdown_body_and_with_attachments(
    tmp_path: Path, smtp_server: SmtpTestServer
) -> None:
    (tmp_path / "logo.png").write_bytes(PNG)
    (tmp_path / "guide.pdf").write_bytes(b"%PDF-1.4 guide")
    source = "![Logo](logo.png)\n\nHello {{ name }}\n"
    campaign = markdown_campaign(
        tmp_path, smtp_server, people(1), source=source, attachments=["guide.pdf"]
    )

    run_ok(campaign)

    (message,) = sent(smtp_server)
    assert structure(message) == [
        "multipart/mixed",
        "multipart/alternative",
        "text/plain",
        "multipart/related",
        "text/html",
        "image/png",
        "application/pdf",
    ]
    image = next(part for part in message.walk() if part.get_content_type() == "image/png")
    html = message.get_body(("html",)).get_content()
    assert f'<img alt="Logo" src="cid:{image["Content-ID"].strip("<>")}">' in html
    assert "![Logo](logo.png)" in message.get_body(("plain",)).get_content()


def test_an_image_named_by_the_csv_is_embedded(tmp_path: Path, smtp_server: SmtpTestServer) -> None:
    rows = [{**row, "picture": "logo.png"} for row in people(1)]
    campaign = images_campaign(tmp_path, smtp_server, '<img src="{{ picture }}">', rows=rows)

    run_ok(campaign)

    (image,) = [p for p in sent(smtp_server)[0].walk() if p.get_content_maintype() == "image"]
    assert image.get_content() == PNG


@pytest.mark.parametrize(
    ("src", "complaint"),
    [
        ("../outside.png", "'../outside.png' leaves the campaign's directory"),
        ("img/../../outside.png", "leaves the campaign's directory"),
        ("link.png", "leaves the campaign's directory"),  # a symlink to ../outside.png
        ("/etc/hosts.png", "renders to the absolute path '/etc/hosts.png'; it must be relative"),
        ("missing.png", "file not found"),
        ("img", "is not an image"),
        ("notes.txt", "'notes.txt' is not an image"),
    ],
)
def test_an_image_outside_the_campaign_or_missing_refuses_the_row(
    tmp_path: Path, smtp_server: SmtpTestServer, src: str, complaint: str
) -> None:
    directory = tmp_path / "campaign"
    (tmp_path / "outside.png").write_bytes(PNG)
    directory.mkdir()
    os.symlink(tmp_path / "outside.png", directory / "link.png")
    (directory / "notes.txt").write_text("notes")
    rows = [{**row, "picture": "logo.png"} for row in people(3)]
    rows[1]["picture"] = src
    campaign = images_campaign(directory, smtp_server, '<img src="{{ picture }}">', rows=rows)

    problem = refused(campaign, smtp_server)

    assert problem.startswith(f"people.csv, row 2, message.html: image {src!r}: "), problem
    assert complaint in problem


def test_a_shared_image_is_read_once_per_run(tmp_path: Path) -> None:
    (tmp_path / "logo.png").write_bytes(PNG)
    campaign_file = write_campaign(
        tmp_path, people(30), smtp="embedded", html='<img src="logo.png"> {{ name }}'
    )
    campaign = load_campaign(campaign_file)
    renderer = Renderer.compile(campaign)
    composer = Composer.prepare(campaign, renderer)
    data = set()
    for number, row in enumerate(people(30), 1):
        recipient = Recipient(number, row["email"], row)
        data.add(composer.compose(recipient, renderer.render(recipient)).data.count(b"image/png"))
    assert data == {1}
    info = composer._read_image.cache_info()
    assert (info.misses, info.hits) == (1, 29)


def test_a_markdown_template_error_is_reported_once_and_safe_lets_a_column_hold_markdown(
    tmp_path: Path, smtp_server: SmtpTestServer
) -> None:
    source = "# {{ name }}\n\n{{ code | safe }} {{ missing }}\n"
    campaign = markdown_campaign(tmp_path / "bad", smtp_server, people(1), source=source)

    problem = refused(campaign, smtp_server)

    assert problem == (
        "people.csv, row 1: template body.md.j2, line 3: 'missing' is undefined; "
        "columns: email, name, code"
    )

    rows = [{**people(1)[0], "intro": "*emphasis* from the CSV"}]
    source = "# {{ name }}\n\n{{ intro | safe }}\n"
    run_ok(markdown_campaign(tmp_path / "good", smtp_server, rows, source=source))
    html = sent(smtp_server)[0].get_body(("html",)).get_content()
    assert "<p><em>emphasis</em> from the CSV</p>" in html

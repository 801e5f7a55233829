"""The bodies after their templates: Markdown to HTML, HTML to readable text, CSS from
``<style>`` blocks into ``style`` attributes, and the relative ``<img src>`` of an HTML
part found and rewritten. Pure functions over strings; no file is read here.

Markdown values: the Markdown template is rendered twice. For the text part the CSV
values go in as they are (the text part is the Markdown source, meant to be read); for
the HTML part every value is escaped for Markdown and HTML (``markdown_escape``), so a
CSV value shows as the text it is, never as markup: the HTML template's autoescaping,
for Markdown. ``{{ column | safe }}`` lets a column hold Markdown on purpose.
"""

from __future__ import annotations

import functools
import re
import threading
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any

from markupsafe import Markup

# Markdown, html2text and css-inline are imported when a campaign first needs them: most
# campaigns need none, and every `batchmail` command (and every build worker) starts faster.
if TYPE_CHECKING:
    import css_inline
    import markdown

_EXTENSIONS = ["extra", "sane_lists"]
_local = threading.local()  # a Markdown converter keeps state: one per thread


class BodyError(ValueError):
    """A body that cannot be converted (the text says why)."""


def _converter() -> markdown.Markdown:
    converter: markdown.Markdown | None = getattr(_local, "markdown", None)
    if converter is None:
        import markdown

        converter = markdown.Markdown(extensions=_EXTENSIONS, output_format="html")
        _local.markdown = converter
    return converter


@functools.cache
def _escaped() -> frozenset[str]:
    """The characters Python-Markdown (with these extensions) unescapes after a backslash."""
    return frozenset(_converter().ESCAPED_CHARS)


def markdown_escape(value: Any) -> str:
    """A value filled into the Markdown template for the HTML part: literal text, for
    Markdown (backslash escapes) and for the HTML it becomes (``&`` and ``<``)."""
    if isinstance(value, Markup):  # {{ column | safe }}: the author wants it as Markdown
        return str(value)
    out = []
    escaped = _escaped()
    for char in str(value):
        if char in escaped:
            out.append("\\" + char)
        elif char == "&":
            out.append("&amp;")
        elif char == "<":
            out.append("&lt;")
        else:
            out.append(char)
    return "".join(out)


def markdown_to_html(source: str) -> str:
    """The HTML of a Markdown document (a fragment: the part needs no <html> around it)."""
    try:
        html: str = _converter().reset().convert(source)
    except MemoryError:
        raise  # not the row's problem: the command stops (see cli)
    # Python-Markdown is a recursive parser of text partly from the CSV: whatever it
    # raises (RecursionError on deep nesting...) is a problem of the row, not a crash.
    except Exception as exc:  # noqa: BLE001
        detail = f"{type(exc).__name__}: {exc}"
        raise BodyError(f"cannot convert the Markdown to HTML: {detail}") from exc
    return html + "\n"


def html_to_text(html: str) -> str:
    """A readable plain-text version of an HTML body: headings, emphasis and lists in
    Markdown style, links as [text](url), images left out."""
    import html2text

    converter = html2text.HTML2Text()
    converter.unicode_snob = True  # keep "Zoë", not "Zoe"
    converter.ignore_images = True
    converter.body_width = 78
    try:
        text: str = converter.handle(html)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - as for Markdown: a problem of the row
        detail = f"{type(exc).__name__}: {exc}"
        raise BodyError(f"cannot make a text part from the HTML: {detail}") from exc
    return text.strip("\n") + "\n"


_STYLE_TAG = re.compile(r"<style[\s>]", re.IGNORECASE)


@functools.cache
def _inliner() -> css_inline.CSSInliner:
    import css_inline

    return css_inline.CSSInliner(
        load_remote_stylesheets=False,  # never fetch a URL while building a message
        keep_at_rules=True,  # @media rules cannot be inlined; keep them in a <style>
        keep_link_tags=True,  # leave the author's <link> alone
    )


def inline_css(html: str) -> str:
    """``html`` with the rules of its ``<style>`` blocks moved into ``style`` attributes,
    as Gmail and Outlook need. HTML without a <style> block is returned as it is."""
    if not _STYLE_TAG.search(html):
        return html
    import css_inline

    try:
        inlined: str = _inliner().inline(html)
    except (css_inline.InlineError, ValueError) as exc:
        raise BodyError(f"cannot inline the CSS of the HTML part: {exc}") from exc
    return inlined if inlined.endswith("\n") else inlined + "\n"


# --- <img src> ---------------------------------------------------------------------------------

_IMG_TAG = re.compile(r"<img", re.IGNORECASE)
_NEWLINE = re.compile("\n")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
# A start tag's name and attributes, read as html.parser reads them (its tolerant
# patterns), so that the src rewritten is the one the parser reported.
_TAG_NAME = re.compile(r"<[a-zA-Z][^\t\n\r\f />\x00]*(?:\s|/(?!>))*")
_ATTRIBUTE = re.compile(
    r"""((?<=['"\s/])[^\s/>][^\s/=>]*)(\s*=+\s*('[^']*'|"[^"]*"|(?!['"])[^>\s]*))?(?:\s|/(?!>))*"""
)


def is_local_source(src: str) -> bool:
    """Whether an <img src> names a file (relative path) rather than a URL: http:,
    https:, data:, cid: (any scheme) and //host/... are left alone."""
    src = src.strip()
    return bool(src) and not _SCHEME.match(src) and not src.startswith("//")


class _ImageFinder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[int, int, str, str]] = []  # (line, column, tag text, src)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "img":
            return
        src = next((value for name, value in attrs if name == "src"), None)
        text = self.get_starttag_text()
        if src is not None and text is not None and is_local_source(src):
            line, column = self.getpos()
            self.found.append((line, column, text, src))

    handle_startendtag = handle_starttag


def local_images(html: str) -> list[tuple[int, int, str]]:
    """(start, end, src) of every <img> start tag whose src is a relative path, in
    order: ``html[start:end]`` is the tag; ``src`` has its character references decoded."""
    if not _IMG_TAG.search(html):
        return []  # the common case, without parsing
    finder = _ImageFinder()
    finder.feed(html)
    finder.close()
    starts = [0] + [match.end() for match in _NEWLINE.finditer(html)]
    found = []
    for line, column, text, src in finder.found:
        start = starts[line - 1] + column
        if html.startswith(text, start):  # always, unless the parser miscounted
            found.append((start, start + len(text), src))
    return found


def with_sources(html: str, images: list[tuple[int, int, str]], new: dict[str, str]) -> str:
    """``html`` with the src of each tag of ``images`` replaced by ``new[src]``."""
    pieces = []
    at = 0
    for start, end, src in images:
        tag = html[start:end]
        value = _src_value(tag)
        if value is None or src not in new:
            continue
        tag = tag[: value[0]] + f'"{new[src]}"' + tag[value[1] :]
        pieces += [html[at:start], tag]
        at = end
    pieces.append(html[at:])
    return "".join(pieces)


def _src_value(tag: str) -> tuple[int, int] | None:
    """Where the value of the first src attribute of a start tag is, quotes included."""
    name = _TAG_NAME.match(tag)
    at = name.end() if name else len(tag)
    while at < len(tag):
        attribute = _ATTRIBUTE.match(tag, at)
        if attribute is None:
            return None
        if attribute.group(1).lower() == "src" and attribute.group(3) is not None:
            return attribute.start(3), attribute.end(3)
        at = attribute.end()
    return None

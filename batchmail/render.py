"""The Jinja2 side: compile every template of a campaign once, render them per recipient.

An undefined variable is always an error (``StrictUndefined``), never an empty string.
Only the HTML body is autoescaped; the text body, header fields and attachment paths
are plain text; the Markdown body is rendered twice, as plain text for the text part and
with every value escaped for the HTML part (see ``batchmail.bodies``). Every jinja2 error
is translated into a located ``CampaignError``.

Then the bodies are finished here: Markdown becomes the HTML part, an HTML part without
a text template gets a text part made from it, and the CSS of the HTML part's <style>
blocks is inlined. The unsubscribe URL (``message.unsubscribe.url``) is rendered first,
so that every other template can show it as ``unsubscribe_url``.

The address templates (from, to, cc, bcc, reply_to and an extra Sender header) have
their own environment whose ``finalize`` passes every ``{{ ... }}`` value through
``addresses.protect``: a value can then be a display name or an address, but never
add a separator, a bracket or a quote (see ``batchmail.addresses``). The filter
``address_list`` is the author's explicit way to let a column hold a whole list.
"""

from __future__ import annotations

import difflib
import functools
import re
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import jinja2
import jinja2.meta

from batchmail.addresses import AddressError, protect
from batchmail.bodies import BodyError, html_to_text, inline_css, markdown_escape, markdown_to_html
from batchmail.campaign import Campaign
from batchmail.errors import CampaignError, Problem
from batchmail.recipients import Recipient

# (RenderedFields attribute, campaign key path, is an address template) of the inline
# address and subject templates.
_INLINE_FIELDS: tuple[tuple[str, str, bool], ...] = (
    ("from_", "message.from", True),
    ("to", "message.to", True),
    ("cc", "message.cc", True),
    ("bcc", "message.bcc", True),
    ("reply_to", "message.reply_to", True),
    ("subject", "message.subject", False),
)


@dataclass(frozen=True)
class RenderedFields:
    """One recipient's rendered templates; nothing here has been validated yet."""

    from_: str
    to: str
    cc: str
    bcc: str
    reply_to: str
    subject: str
    text: str | None
    html: str | None
    attachments: tuple[str, ...]  # rendered paths, in campaign.message.attachments order
    headers: tuple[tuple[str, str], ...]  # (name, rendered value), in campaign order
    unsubscribe_url: str | None = None  # rendered message.unsubscribe.url, not yet checked
    # from_, to, cc, bcc, reply_to and a Sender header hold protected values: read them
    # with addresses.parse_address_list, show them with addresses.reveal.


@dataclass(frozen=True)
class _Compiled:
    label: str  # how errors name it: a YAML key path or a template file name
    filename: str  # Jinja's code filename, to find the template's line in a traceback
    template: jinja2.Template
    constant: str | None = None  # the output of a template without Jinja syntax

    def render(self, context: dict[str, Any]) -> str:
        if self.constant is not None:
            return self.constant  # the same for every row: rendered once, at compile time
        return self.template.render(context)


# Header names whose extra-header template is an address template.
ADDRESS_HEADERS = frozenset({"sender"})


class _AddressList(str):
    """A value the template's author marked as address-list text: it is not protected."""


def _address_list(value: Any) -> _AddressList:
    return _AddressList(value)


def _protect(value: Any) -> str:
    if isinstance(value, _AddressList):
        return str(value)
    return protect(str(value))


def _environment(
    *, autoescape: bool, body: bool, address: bool = False, markdown: bool = False
) -> jinja2.Environment:
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        autoescape=autoescape,
        # A body's final newline is part of the text; a header value must not end in one.
        keep_trailing_newline=body,
        finalize=_protect if address else markdown_escape if markdown else None,
    )
    if address:
        env.filters["address_list"] = _address_list
    return env


class Renderer:
    """Every template of one campaign, compiled once; ``render`` fills them for a row."""

    def __init__(
        self,
        csv_name: str,
        inline: dict[str, _Compiled],
        text: _Compiled | None,
        html: _Compiled | None,
        attachments: tuple[_Compiled, ...],
        headers: tuple[tuple[str, _Compiled], ...],
        static_attachments: frozenset[int],
        bodies: _Bodies | None = None,
    ) -> None:
        self._csv_name = csv_name
        self._inline = inline
        self._text = text
        self._html = html
        self._attachments = attachments
        self._headers = headers
        self._static_attachments = static_attachments
        self._bodies = bodies or _Bodies()

    @classmethod
    def compile(cls, campaign: Campaign) -> Renderer:
        """Read and compile every template; raise CampaignError listing every problem."""
        compiler = _Compiler(campaign)
        message = campaign.message
        inline = {
            attribute: compiler.inline(getattr(message, attribute), key, address=address)
            for attribute, key, address in _INLINE_FIELDS
        }
        text = compiler.file(message.text, "message.text", html=False)
        html = compiler.file(message.html, "message.html", html=True)
        markdown_text = compiler.file(message.markdown, "message.markdown", html=False)
        bodies = _Bodies(
            markdown_text=markdown_text,
            markdown_html=compiler.file(
                message.markdown, "message.markdown", html=False, env=compiler.markdown_env
            )
            if markdown_text
            else None,
            unsubscribe=(
                compiler.inline(message.unsubscribe.url, "message.unsubscribe.url")
                if message.unsubscribe
                else None
            ),
            inline_css=message.inline_css,
        )
        if message.text is None and message.html is None and message.markdown is None:
            compiler.problems.append(
                Problem(
                    campaign.where("message"),
                    "needs a `text` or an `html` template, or a `markdown` one",
                )
            )
        elif message.html is not None and message.markdown is not None:
            compiler.problems.append(
                Problem(campaign.where("message.markdown"), "give `markdown` or `html`, not both")
            )
        attachments = tuple(
            compiler.inline(source, f"message.attachments[{index}]")
            for index, source in enumerate(message.attachments)
        )
        headers = tuple(
            (
                name,
                compiler.inline(
                    source, f"message.headers.{name}", address=name.lower() in ADDRESS_HEADERS
                ),
            )
            for name, source in message.headers
        )
        if compiler.problems:
            raise CampaignError(compiler.problems)
        static = frozenset(
            index
            for index, source in enumerate(message.attachments)
            if _is_plain_text(compiler.header_env, source)
        )
        return cls(
            campaign.recipients.file.name, inline, text, html, attachments, headers, static, bodies
        )

    def is_static_attachment(self, index: int) -> bool:
        """Whether attachment template ``index`` has no Jinja syntax: the same file for
        every row, which compose reads and encodes once per run."""
        return index in self._static_attachments

    def render(self, recipient: Recipient) -> RenderedFields:
        """Fill every template for one row; raise CampaignError naming each failing template."""
        context: dict[str, Any] = dict(recipient.fields)
        # Set last so that a column called "row" cannot hide the row itself.
        context["row"] = dict(recipient.fields)
        context["row_number"] = recipient.row_number
        problems: list[Problem] = []
        where = f"{self._csv_name}, row {recipient.row_number}"
        bodies = self._bodies

        def fill(compiled: _Compiled) -> str:
            try:
                return compiled.render(context)
            except AddressError as exc:  # a value protect() refuses
                problems.append(Problem(f"{where}, {compiled.label}", str(exc)))
                return ""
            except MemoryError:
                raise  # not the row's problem: the command stops (see cli)
            # The templates are code the campaign's author wrote: any exception they raise
            # (UndefinedError, but also ZeroDivisionError, TypeError...) is a problem of the row.
            except Exception as exc:  # noqa: BLE001
                problems.append(Problem(where, _describe_runtime_error(compiled, exc, context)))
                return ""

        unsubscribe_url = fill(bodies.unsubscribe) if bodies.unsubscribe else None
        if unsubscribe_url is not None:
            context["unsubscribe_url"] = unsubscribe_url  # a column of that name is hidden
        inline = {name: fill(compiled) for name, compiled in self._inline.items()}
        text = fill(self._text) if self._text else None
        html = fill(self._html) if self._html else None
        markdown = None
        if bodies.markdown_text and bodies.markdown_html:
            found = len(problems)
            source = fill(bodies.markdown_text)
            text = source if text is None else text
            # The same template again: an error in it is reported once.
            markdown = fill(bodies.markdown_html) if len(problems) == found else ""
        attachments = tuple(fill(compiled) for compiled in self._attachments)
        headers = tuple((name, fill(compiled)) for name, compiled in self._headers)
        if problems:
            raise CampaignError(problems)
        label = "message.markdown" if markdown is not None else "message.html"
        try:
            if markdown is not None:
                html = markdown_to_html(markdown)
            if html is not None and text is None:
                text = html_to_text(html)
            if html is not None and bodies.inline_css:
                html = inline_css(html)
        except BodyError as exc:
            raise CampaignError([Problem(f"{where}, {label}", str(exc))]) from exc
        return RenderedFields(
            **inline,
            text=text,
            html=html,
            attachments=attachments,
            headers=headers,
            unsubscribe_url=unsubscribe_url,
        )


@dataclass(frozen=True)
class _Bodies:
    """The templates besides text and html: Markdown (twice), the unsubscribe URL."""

    markdown_text: _Compiled | None = None  # values as they are: the text part
    markdown_html: _Compiled | None = None  # values escaped: the source of the HTML part
    unsubscribe: _Compiled | None = None
    inline_css: bool = True


class _Compiler:
    """Compiles templates one by one, collecting every problem instead of stopping."""

    def __init__(self, campaign: Campaign) -> None:
        self.campaign = campaign
        self.problems: list[Problem] = []
        self.header_env = _environment(autoescape=False, body=False)
        self.address_env = _environment(autoescape=False, body=False, address=True)
        self.text_env = _environment(autoescape=False, body=True)
        self.html_env = _environment(autoescape=True, body=True)
        self.markdown_env = _environment(autoescape=False, body=True, markdown=True)

    def inline(self, source: str, key_path: str, *, address: bool = False) -> _Compiled:
        """The compiled template; on a problem, an empty stand-in (compile() raises anyway)."""
        env = self.address_env if address else self.header_env
        try:
            return _compile(env, source, key_path)
        except jinja2.TemplateSyntaxError as exc:
            line = f" (line {exc.lineno} of the template)" if "\n" in source.strip() else ""
            self.problems.append(
                Problem(self.campaign.where(key_path), f"template syntax: {exc.message}{line}")
            )
        except _TOO_DEEP as exc:
            self.problems.append(Problem(self.campaign.where(key_path), _too_deep(exc)))
        return _compile(self.header_env, "", key_path)

    def file(
        self,
        path: Path | None,
        key_path: str,
        *,
        html: bool,
        env: jinja2.Environment | None = None,
    ) -> _Compiled | None:
        if path is None:
            return None
        path = self.campaign.directory / path  # absolute paths stay as they are
        source = self._read(path, key_path)
        if source is None:
            return None
        try:
            env = env or (self.html_env if html else self.text_env)
            return _compile(env, source, path.name)
        except jinja2.TemplateSyntaxError as exc:
            self.problems.append(
                Problem(
                    f"{path.name}, line {exc.lineno}",
                    f"template syntax: {exc.message} ({key_path})",
                )
            )
        except _TOO_DEEP as exc:
            self.problems.append(Problem(self.campaign.where(key_path), _too_deep(exc)))
        return None

    def _read(self, path: Path, key_path: str) -> str | None:
        where = self.campaign.where(key_path)
        try:
            # utf-8-sig: a byte-order mark left by an editor must not end up in the message.
            return path.read_bytes().decode("utf-8-sig")
        except FileNotFoundError:
            self.problems.append(Problem(where, f"template file not found: {path}"))
        except IsADirectoryError:
            self.problems.append(Problem(where, f"{path} is a directory, not a template file"))
        except OSError as exc:
            self.problems.append(Problem(where, f"cannot read template {path}: {exc.strerror}"))
        except UnicodeDecodeError as exc:
            self.problems.append(
                Problem(
                    where,
                    f"template {path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} "
                    f"at offset {exc.start}); save it as UTF-8",
                )
            )
        return None


# Jinja's parser recurses per nesting level, and the Python code it generates must
# compile: past Python's limits (20 nested blocks, 200 nested parentheses, the recursion
# limit) these are what come out, not a TemplateSyntaxError.
_TOO_DEEP = (RecursionError, SyntaxError, MemoryError)


def _too_deep(exc: BaseException) -> str:
    detail = str(exc).split("\n")[0] or type(exc).__name__
    return f"the template is nested too deeply to compile ({detail}); simplify it"


def _compile(env: jinja2.Environment, source: str, label: str) -> _Compiled:
    filename = f"batchmail-template:{label}"
    code = env.compile(source, name=label, filename=filename)
    # Jinja copies a template's globals into each render's context. make_globals gives a
    # ChainMap over the environment's (to follow later changes to them: batchmail makes
    # none), whose iteration in Python took more than half of each render: 22 -> 10 us a
    # template with a plain dict of the same globals.
    template = env.template_class.from_code(env, code, dict(env.make_globals(None)))
    constant = template.render() if _is_plain_text(env, source) else None
    return _Compiled(label, filename, template, constant)


def template_variables(source: str) -> tuple[str, ...]:
    """The variables an inline template (already compiled without error) reads, sorted:
    to name the CSV columns behind a refused value."""
    env = _environment(autoescape=False, body=False)
    return tuple(sorted(jinja2.meta.find_undeclared_variables(env.parse(source))))


def _is_plain_text(env: jinja2.Environment, source: str) -> bool:
    """True when ``source`` has no Jinja syntax at all: a literal string."""
    return all(token_type == "data" for _, token_type, _ in env.lex(source))


def _describe_runtime_error(compiled: _Compiled, exc: Exception, context: dict[str, Any]) -> str:
    line = _template_line(compiled.filename, exc.__traceback__)
    at = f"template {compiled.label}" + (f", line {line}" if line else "")
    if isinstance(exc, jinja2.UndefinedError) and exc.message:
        columns = tuple(context["row"])
        variables = tuple(name for name in context if name not in context["row"])
        return f"{at}: {exc.message}{undefined_hint(exc.message, columns, variables)}"
    if isinstance(exc, jinja2.TemplateError):
        return f"{at}: {exc.message or type(exc).__name__}"
    return f"{at}: {type(exc).__name__}: {exc}"


# Jinja's words for a name the row does not have: {{ nme }}, and {{ row.nme }} or
# {{ row["first nme"] }} (a missing key of a dict reads as a missing attribute).
_UNDEFINED_NAME = re.compile(r"'(?P<name>.+)' is undefined")
_MISSING_KEY = re.compile(r"'dict object' has no attribute '(?P<name>.+)'")
_COLUMNS_SHOWN = 20


@functools.lru_cache(maxsize=64)
def undefined_hint(message: str, columns: tuple[str, ...], variables: tuple[str, ...]) -> str:
    """What to add to Jinja's "'nme' is undefined": the columns (and, for a bare name, the
    other variables) it is close to, and the columns there are. The same for every row of a
    CSV, so that a typo on every row is told once."""
    if match := _UNDEFINED_NAME.fullmatch(message):
        candidates = (*columns, *variables)
    elif match := _MISSING_KEY.fullmatch(message):
        candidates = columns
    else:
        return ""
    name = match["name"]
    # A column that differs only in case first: difflib scores "EMAIL"/"email" as unlike.
    close = [c for c in candidates if c.casefold() == name.casefold() and c != name]
    close += [c for c in difflib.get_close_matches(name, candidates, n=3) if c not in close]
    suggestion = f"; did you mean {' or '.join(repr(c) for c in close[:3])}?" if close else ";"
    shown = ", ".join(columns[:_COLUMNS_SHOWN])
    more = f", and {len(columns) - _COLUMNS_SHOWN} more" if len(columns) > _COLUMNS_SHOWN else ""
    return f"{suggestion} columns: {shown}{more}"


def _template_line(filename: str, traceback: TracebackType | None) -> int | None:
    """The template line where the error happened: Jinja rewrites tracebacks so that
    template frames carry template line numbers under the template's filename."""
    line = None
    while traceback is not None:
        if traceback.tb_frame.f_code.co_filename == filename:
            line = traceback.tb_lineno
        traceback = traceback.tb_next
    return line

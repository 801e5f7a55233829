"""Hostile input: the campaign loader, the CSV reader and the template compiler never raise
anything but a ``CampaignError`` with a message, whatever bytes they are given.

Each reader gets raw random bytes and structure-aware input: YAML documents built from the
real campaign keys with values of random types (and YAML's own traps: tags, aliases, dates,
huge numbers), CSVs in random encodings with BOMs, quotes and NULs, and templates assembled
from Jinja syntax. Hypothesis shrinks any crash to a small reproducer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchmail.campaign import (
    Campaign,
    MessageConfig,
    RecipientsConfig,
    SendConfig,
    SmtpConfig,
    load_campaign,
)
from batchmail.errors import CampaignError
from batchmail.recipients import read_rows
from batchmail.render import Renderer

# The unicode_escape codec warns about the escapes it decodes in random CSVs.
pytestmark = pytest.mark.filterwarnings("ignore:invalid escape sequence:DeprecationWarning")


def fuzz(examples: int) -> settings:
    """Each reader gets 2,000 cases in all, split between its raw and structured inputs."""
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def assert_only_campaign_errors(action: Callable[[], object]) -> None:
    """Run ``action``; success is fine, a CampaignError must say something, anything else
    is a crash that escaped the public API."""
    try:
        action()
    except CampaignError as exc:
        assert str(exc).strip(), "a CampaignError without a message"
        assert all(problem.message.strip() for problem in exc.problems), exc.problems


@pytest.fixture(scope="module")
def campaign_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with the files a fuzzed campaign may name (and one it may not read)."""
    directory = tmp_path_factory.mktemp("fuzz")
    (directory / "people.csv").write_text("email,name\na@example.com,Ann\n", encoding="utf-8")
    (directory / "body.txt.j2").write_text("Hi {{ name }}\n", encoding="utf-8")
    (directory / "body.html.j2").write_text("<p>Hi {{ name }}</p>\n", encoding="utf-8")
    (directory / "subdir").mkdir()
    return directory


# --- the campaign loader ------------------------------------------------------------------

SECTIONS: dict[str, tuple[str, ...]] = {
    "smtp": (
        "host",
        "port",
        "security",
        "username",
        "password_env",
        "password_command",
        "timeout",
        "data_timeout",
        "ca_file",
        "insecure_auth",
    ),
    "recipients": ("file", "encoding", "key"),
    "message": (
        "from",
        "to",
        "cc",
        "bcc",
        "reply_to",
        "subject",
        "text",
        "html",
        "attachments",
        "headers",
    ),
    "send": ("rate", "max_per_session", "retries", "retry_delay", "window", "sessions"),
}
TOP_KEYS = ("name", *SECTIONS)

# Scalars written as they are, unquoted, so that YAML itself interprets them: its tags,
# implicit dates and numbers, aliases and flow collections are where parsers trip.
YAML_TRAPS = (
    "~",
    "null",
    "yes",
    "no",
    "on",
    ".nan",
    ".inf",
    "-.inf",
    "1e400",
    "1.0e+400",
    "-0",
    "0o777",
    "0x" + "f" * 3600,  # parses in base 16, yet is past int-to-str's 4300 digits
    "1" * 4400,
    "190:20:30",
    "2020-99-99",
    "2020-01-01T99:00:00",
    "2001-12-14t21:59:43.10-05:00",
    "!!float x",
    "!!int x",
    "!!int 0x",
    "!!bool x",
    "!!null x",
    "!!timestamp 2020-02-30",
    "!!binary ===",
    "!!binary aGVsbG8=",
    "!!str [1]",
    "!!set {a, b}",
    "!!set {[a]: b}",
    "!!omap [a]",
    "!!omap [{a: 1}, {a: 2}]",
    "!!pairs [1]",
    "!!map [1]",
    "!!seq {a: 1}",
    "!!python/object/apply:os.system [echo]",
    "!!python/name:os.system",
    "!custom x",
    "!<tag:example.com,2000:x> y",
    "&anchor x",
    "*anchor",
    "*undefined",
    "[*anchor, *anchor]",
    "{<<: *anchor}",
    "{<<: [1]}",
    "{? [a] : b}",
    "{1: a, 1.5: b, true: c}",
    "[" * 300 + "]" * 300,
    "[" * 150,
    "{a: " * 100 + "b" + "}" * 100,
    '"\\0"',
    '"\\ud800"',
    '"\\x85\\u2028"',
    "'it''s'",
    "|\n  block\n",
    ">-\n  folded\n",
    "embedded",
    "starttls",
    "tls",
    "none",
    "people.csv",
    "body.txt.j2",
    "body.html.j2",
    "subdir",
    "/",
    ".",
    "..",
    "/dev/null",
    "x" * 1000,
    "{{ email }}",
    "{{ name }} <{{ email }}>",
    "utf-8",
    "utf-16",
    "base64",
    "rot13",
    "zlib_codec",
    "undefined",
    "idna",
    "punycode",
    "unicode_escape",
    "mbcs",
)

scalars = st.one_of(
    st.sampled_from(YAML_TRAPS),
    st.text(max_size=12).map(json.dumps),  # JSON strings are YAML: NULs, surrogates, escapes
    st.integers().map(str),
    st.floats().map(repr),
    st.booleans().map(str),
)


def flow(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Flow lists and mappings of other nodes, on one line."""
    lists = st.lists(children, max_size=3).map(lambda items: "[" + ", ".join(items) + "]")
    pairs = st.tuples(st.sampled_from(TOP_KEYS + SECTIONS["message"]), children)
    maps = st.lists(pairs, max_size=3).map(
        lambda pairs: "{" + ", ".join(f"{k}: {v}" for k, v in pairs) + "}"
    )
    return lists | maps


values = st.recursive(scalars, flow, max_leaves=3)


@st.composite
def section_text(draw: st.DrawFn, keys: tuple[str, ...]) -> str:
    """A block mapping with a random selection of a section's keys (and sometimes an unknown
    or misspelt one), each with a random value; indentation varies to hit the parser."""
    chosen = draw(st.lists(st.sampled_from(keys), max_size=6, unique=True))
    if draw(st.booleans()):
        chosen.append(draw(st.sampled_from(("atachments", "hots", "x", "1", "true", ""))))
    indent = " " * draw(st.sampled_from((2, 2, 2, 4, 1, 3)))
    lines = []
    for key in chosen:
        if key == "headers" and draw(st.booleans()):
            names = draw(
                st.lists(st.sampled_from(("X-A", "Bad Name", "X:Y", "1", "Subject")), max_size=3)
            )
            inner = "".join(f"\n{indent}{indent}{n}: {draw(values)}" for n in names)
            lines.append(f"{indent}{key}:{inner or ' {}'}")
        elif key == "attachments" and draw(st.booleans()):
            items = "".join(
                f"\n{indent}{indent}- {draw(values)}" for _ in range(draw(st.integers(0, 3)))
            )
            lines.append(f"{indent}{key}:{items or ' []'}")
        else:
            lines.append(f"{indent}{key}: {draw(values)}")
    return "\n".join(lines)


@st.composite
def campaign_documents(draw: st.DrawFn) -> bytes:
    """A YAML campaign built from the real keys, with values of random types, sometimes
    spliced with random text, and encoded with a random BOM or none."""
    parts = []
    for key in draw(st.lists(st.sampled_from(TOP_KEYS), min_size=1, max_size=5, unique=True)):
        if key in SECTIONS and draw(st.integers(0, 4)):
            body = draw(section_text(SECTIONS[key]))
            parts.append(f"{key}:\n{body}" if body else f"{key}: {{}}")
        else:
            parts.append(f"{key}: {draw(values)}")
    text = "\n".join(parts) + "\n"
    if draw(st.integers(0, 5)) == 0:  # splice random text somewhere
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.text(max_size=10)) + text[at:]
    data = text.encode("utf-8", "surrogatepass")
    prefix = draw(st.sampled_from((b"", b"", b"", b"\xef\xbb\xbf", b"\xff\xfe", b"\x00")))
    return prefix + data


VALID = b"""\
smtp: {host: smtp.example.com, port: 2525, security: none}
recipients: {file: people.csv}
message:
  from: a@example.com
  to: "{{ email }}"
  subject: Hello
  text: body.txt.j2
"""


@st.composite
def mutated_valid_campaign(draw: st.DrawFn) -> bytes:
    """The valid campaign with a few bytes replaced, inserted or cut."""
    data = bytearray(VALID)
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(data)))
        choice = draw(st.integers(0, 2))
        byte = draw(st.integers(0, 255))
        if choice == 0 and at < len(data):
            data[at] = byte
        elif choice == 1:
            data.insert(at, byte)
        else:
            del data[at : at + draw(st.integers(1, 20))]
    return bytes(data)


def load(campaign_dir: Path, data: bytes) -> None:
    path = campaign_dir / "campaign.yaml"
    path.write_bytes(data)
    assert_only_campaign_errors(lambda: load_campaign(path))


def test_the_valid_seed_campaign_loads(campaign_dir: Path) -> None:
    (campaign_dir / "campaign.yaml").write_bytes(VALID)
    assert load_campaign(campaign_dir / "campaign.yaml").smtp.port == 2525


@fuzz(800)
@given(data=st.binary(max_size=2000))
def test_loader_on_random_bytes(campaign_dir: Path, data: bytes) -> None:
    load(campaign_dir, data)


@fuzz(800)
@given(data=campaign_documents())
def test_loader_on_campaign_shaped_yaml(campaign_dir: Path, data: bytes) -> None:
    load(campaign_dir, data)


@fuzz(400)
@given(data=mutated_valid_campaign())
def test_loader_on_a_mutated_valid_campaign(campaign_dir: Path, data: bytes) -> None:
    load(campaign_dir, data)


def valid_with(smtp: str = "", recipients: str = "") -> str:
    """The valid campaign with extra keys in its smtp and recipients mappings."""
    text = VALID.decode()
    text = text.replace("security: none}", f"security: none{smtp}}}")
    return text.replace("file: people.csv}", f"file: people.csv{recipients}}}")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (valid_with(smtp=", timeout: 2020-99-99"), "line 1"),  # a date YAML cannot build
        (valid_with(smtp=", timeout: !!float x"), "line 1"),
        (valid_with(smtp=", insecure_auth: !!bool x"), "line 1"),
        (valid_with(smtp=", timeout: " + "1" * 5000), "line 1"),  # past int-to-str's limit
        (valid_with(smtp=", timeout: 0x" + "f" * 5000), "number too large"),
        (valid_with(smtp=", timeout: 0x" + "f" * 300), "smtp.timeout"),  # beyond any float
        (valid_with(smtp=', ca_file: "ca\\0.pem"'), "smtp.ca_file"),  # a NUL in a path
        (valid_with(recipients=', exclude: ["\\ud800"]'), "recipients.exclude"),  # a surrogate
        (valid_with(recipients=', encoding: "utf\\0"'), "recipients.encoding"),
        (valid_with(recipients=", encoding: base64"), "recipients.encoding"),  # bytes to bytes
        (valid_with(recipients=", encoding: rot13"), "recipients.encoding"),  # text to text
        (valid_with(recipients=", encoding: undefined"), "recipients.encoding"),  # decodes nothing
    ],
)
def test_known_traps_are_located_campaign_errors(
    campaign_dir: Path, text: str, expected: str
) -> None:
    path = campaign_dir / "campaign.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CampaignError) as caught:
        load_campaign(path)
    assert expected in str(caught.value)


# --- the CSV reader ---------------------------------------------------------------------

ENCODINGS = (
    "utf-8",
    "utf-8-sig",
    "utf-16",
    "utf-16-le",
    "utf-32",
    "utf-7",
    "latin-1",
    "cp1252",
    "ascii",
    "gbk",
    "big5",
    "shift_jis",
    "euc_kr",
    "iso2022_jp",
    "hz",
    "koi8-r",
    "mac_roman",
    "idna",
    "punycode",
    "unicode_escape",
    "raw_unicode_escape",
)
BOMS = (b"", b"", b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff", b"\xff\xfe\x00\x00", b"+/v8-")
CELL_PIECES = ('"', '""', ",", "\n", "\r\n", "\r", "\x00", " ", "\ufeff", "é", "王", "\ud800")
cells = st.lists(st.sampled_from(CELL_PIECES) | st.text(max_size=8), max_size=5).map("".join)


@st.composite
def csv_files(draw: st.DrawFn) -> tuple[bytes, str, str]:
    """(file bytes, encoding, key column): rows of random cells, joined with random
    separators and quoting, encoded with a random codec (sometimes the wrong one)."""
    header = draw(st.lists(cells, min_size=1, max_size=4))
    rows = draw(st.lists(st.lists(cells, max_size=5), max_size=6))
    quote = draw(st.booleans())
    newline = draw(st.sampled_from(("\n", "\r\n", "\r", "")))

    def line(values: list[str]) -> str:
        if quote:
            return ",".join('"' + value.replace('"', '""') + '"' for value in values)
        return ",".join(values)

    text = newline.join(line(values) for values in [header, *rows])
    written_in = draw(st.sampled_from(ENCODINGS))
    read_as = draw(st.sampled_from((written_in, written_in, *ENCODINGS)))
    data = encode(text, written_in)
    if draw(st.integers(0, 4)) == 0:
        data = data[: draw(st.integers(0, len(data)))]  # cut, maybe mid-character
    key = draw(st.sampled_from(header) | cells)
    return draw(st.sampled_from(BOMS)) + data, read_as, key


def read_all(campaign_dir: Path, data: bytes, encoding: str, key: str) -> None:
    path = campaign_dir / "fuzz.csv"
    path.write_bytes(data)
    config = RecipientsConfig(path, encoding, key)

    def consume() -> None:
        for row in read_rows(config):
            # A row is a recipient or a list of problems, never both nor neither.
            assert (row.recipient is None) == bool(row.problems), row
            assert all(problem.message.strip() for problem in row.problems)

    assert_only_campaign_errors(consume)


def encode(text: str, encoding: str) -> bytes:
    """``text`` in ``encoding`` as far as it goes: surrogates kept where the codec can (UTF-*),
    replaced where it cannot; UTF-8 when the codec refuses the text outright (idna)."""
    for errors in ("surrogatepass", "replace"):
        try:
            return text.encode(encoding, errors)
        except UnicodeError:
            continue
    return text.encode("utf-8", "surrogatepass")


@fuzz(800)
@given(
    data=st.binary(max_size=2000),
    encoding=st.sampled_from(ENCODINGS),
    key=st.sampled_from(("email", "", "\x00")) | st.text(max_size=5),
)
def test_csv_reader_on_random_bytes(
    campaign_dir: Path, data: bytes, encoding: str, key: str
) -> None:
    read_all(campaign_dir, data, encoding, key)


@fuzz(1200)
@given(csv_file=csv_files())
def test_csv_reader_on_csv_shaped_input(
    campaign_dir: Path, csv_file: tuple[bytes, str, str]
) -> None:
    read_all(campaign_dir, *csv_file)


@pytest.mark.parametrize(
    ("data", "encoding"),
    [
        (b"email,name\na@x.org,A\n", "idna"),  # decoding with errors="replace" is unsupported
        (b"email,name\na@x.org,A\n", "punycode"),  # raises UnicodeError, not ...DecodeError
        (b"email\n\\x\n", "unicode_escape"),
        (b"email\na@x.org\xff\n", "utf-7"),
    ],
)
def test_csv_encodings_that_fail_oddly_are_located(
    campaign_dir: Path, data: bytes, encoding: str
) -> None:
    read_all(campaign_dir, data, encoding, "email")


# --- the template compiler --------------------------------------------------------------

JINJA_PIECES = (
    "{{",
    "}}",
    "{%",
    "%}",
    "{#",
    "#}",
    "{%-",
    "-%}",
    "{{ name }}",
    "{{ row['first name'] }}",
    "{{ row_number + 1 }}",
    "{{ x|upper }}",
    "{{ x|nosuchfilter }}",
    "{{ x is nosuchtest }}",
    "{{ 1/0 }}",
    "{{ 'a' * 3 }}",
    "{{ (1, 2)[5] }}",
    "{{ {}.x.y }}",
    "{{ lipsum() }}",
    "{{ range(3)|list }}",
    "{% for x in y %}",
    "{% endfor %}",
    "{% for %}",
    "{% if x %}",
    "{% elif %}",
    "{% else %}",
    "{% endif %}",
    "{% raw %}",
    "{% endraw %}",
    "{% set x = 1 %}",
    "{% set x %}",
    "{% endset %}",
    "{% macro m(a, b=1) %}",
    "{% endmacro %}",
    "{% call m() %}",
    "{% endcall %}",
    "{% filter upper %}",
    "{% endfilter %}",
    "{% block b %}",
    "{% endblock %}",
    "{% extends 'base' %}",
    "{% include 'other' %}",
    "{% import 'lib' as lib %}",
    "{% from 'lib' import f %}",
    "{% with a = 1 %}",
    "{% endwith %}",
    "{% autoescape true %}",
    "{% endautoescape %}",
    "{% do x %}",
    "{% break %}",
    "{% trans %}",
    "(",
    ")",
    "[",
    "]",
    "|",
    ".",
    "'",
    '"',
    "\\",
    "\n",
    "\r",
    "\x00",
    "\ud800",
    "name",
    "1e999",
    "0x",
    "é",
)
templates = st.lists(st.sampled_from(JINJA_PIECES) | st.text(max_size=5), max_size=15).map("".join)


def nested(depth: int, opening: str, closing: str) -> str:
    return opening * depth + "x" + closing * depth


DEEP_TEMPLATES = (
    nested(30, "{% for x in y %}", "{% endfor %}"),  # past Python's 20 nested blocks
    nested(120, "{% if x %}", "{% endif %}"),
    "{{ " + "(" * 250 + "x" + ")" * 250 + " }}",  # past the Python parser's nesting limit
    "{{ " + "[" * 3000 + " }}",
    "{{ " + "x." * 5000 + "y }}",
    "{{ " + "-" * 5000 + "1 }}",
    "{{ " + "x|upper" + "|upper" * 3000 + " }}",
)


TEMPLATE_FIELDS = ("from_", "to", "cc", "bcc", "reply_to", "subject")
PLACES = ("text", "html", "attachments", "headers")


def fuzz_campaign(directory: Path, **message: Any) -> Campaign:
    """A campaign around ``message``'s fields (anything not given is a plain, valid value)."""
    fields: dict[str, Any] = {"from_": "a@example.com", "to": "{{ email }}", "subject": "Hi"}
    return Campaign(
        path=directory / "campaign.yaml",
        name="fuzz",
        smtp=SmtpConfig(host="127.0.0.1", port=25, security="none"),
        recipients=RecipientsConfig(directory / "people.csv"),
        message=MessageConfig(**{**fields, **message}),
        send=SendConfig(),
    )


@st.composite
def template_campaigns(draw: st.DrawFn, directory: Path) -> Campaign:
    """A campaign with one or two random Jinja-ish templates, each in a random place: an
    inline field, the text or html file (maybe with a BOM), an attachment path or a header."""
    # Nesting just past Python's limit of 20 nested blocks, one time in 20: compiling it is
    # slow, and DEEP_TEMPLATES has its own test.
    deep = st.integers(19, 21).map(lambda n: nested(n, "{% for x in y %}", "{% endfor %}"))
    source = st.one_of(*[templates] * 19, deep)
    message: dict[str, Any] = {}
    for place in draw(
        st.lists(st.sampled_from(TEMPLATE_FIELDS + PLACES), min_size=1, max_size=2, unique=True)
    ):
        if place in ("text", "html"):
            path = directory / f"fuzz.{place}.j2"
            bom = draw(st.sampled_from((b"", b"\xef\xbb\xbf")))
            path.write_bytes(bom + draw(source).encode("utf-8", "surrogatepass"))
            message[place] = path
        elif place == "attachments":
            message[place] = (draw(source),)
        elif place == "headers":
            message[place] = (("X-Fuzz", draw(source)),)
        else:
            message[place] = draw(source)
    if "text" not in message and "html" not in message:
        # A good body, a missing one, or a directory where the file should be.
        bodies = (directory / "body.txt.j2", directory / "missing.j2", directory / "subdir")
        message["text"] = draw(st.sampled_from(bodies))
    return fuzz_campaign(directory, **message)


@fuzz(1200)
@given(data=st.data())
def test_template_compiler_on_jinja_shaped_input(campaign_dir: Path, data: Any) -> None:
    campaign = data.draw(template_campaigns(campaign_dir))
    assert_only_campaign_errors(lambda: Renderer.compile(campaign))


@fuzz(800)
@given(source=st.text(max_size=200), raw=st.binary(max_size=300))
def test_template_compiler_on_random_text_and_bytes(
    campaign_dir: Path, source: str, raw: bytes
) -> None:
    text_file = campaign_dir / "raw.txt.j2"
    text_file.write_bytes(raw)
    campaign = fuzz_campaign(campaign_dir, subject=source, text=text_file)
    assert_only_campaign_errors(lambda: Renderer.compile(campaign))


@pytest.mark.parametrize("source", DEEP_TEMPLATES)
def test_deeply_nested_templates_are_campaign_errors(campaign_dir: Path, source: str) -> None:
    text_file = campaign_dir / "deep.txt.j2"
    text_file.write_text(source, encoding="utf-8")
    for campaign in (
        fuzz_campaign(campaign_dir, to=source, text=campaign_dir / "body.txt.j2"),
        fuzz_campaign(campaign_dir, text=text_file),
    ):
        with pytest.raises(CampaignError) as caught:
            Renderer.compile(campaign)
        assert "nested too deeply" in str(caught.value)

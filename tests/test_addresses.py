"""Strict address lists and header-value checks."""

from __future__ import annotations

import pytest
from email_validator import validate_email
from hypothesis import given, settings
from hypothesis import strategies as st

from batchmail import addresses
from batchmail.addresses import (
    Address,
    AddressError,
    HeaderError,
    ascii_addr_spec,
    check_header_name,
    check_header_value,
    parse_address_list,
    protect,
    reveal,
    wire_addr_spec,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", ()),
        ("  \t ", ()),
        ("a@example.com", (Address("", "a@example.com"),)),
        ("  a@example.com  ", (Address("", "a@example.com"),)),
        ("Ann Lee <ann@example.com>", (Address("Ann Lee", "ann@example.com"),)),
        ("<ann@example.com>", (Address("", "ann@example.com"),)),
        ('"Lee, Ann" <ann@example.com>', (Address("Lee, Ann", "ann@example.com"),)),
        ('"Ann \\"AL\\" Lee" <ann@example.com>', (Address('Ann "AL" Lee', "ann@example.com"),)),
        ("Dr. Who <who@example.com>", (Address("Dr. Who", "who@example.com"),)),
        ("张伟 <zw@example.cn>", (Address("张伟", "zw@example.cn"),)),
        ("Zoë <zoe@bücher.de>", (Address("Zoë", "zoe@bücher.de"),)),
        ("Ann@Example.COM", (Address("", "Ann@Example.COM"),)),  # kept exactly as written
        (
            'a@example.com, "B; C" <b@example.com>;c@example.com',
            (
                Address("", "a@example.com"),
                Address("B; C", "b@example.com"),
                Address("", "c@example.com"),
            ),
        ),
    ],
)
def test_parses_well_formed_lists(value: str, expected: tuple[Address, ...]) -> None:
    assert parse_address_list(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("a@b.com>, evil@x.com", '"a@b.com>" is not one address'),
        ("<a@b.com", '"<a@b.com" is not one address'),
        ("Ann <a@b.com> x@y.com", "text after"),
        ("Ann <<a@b.com>>", "is not one address"),
        ('"x"@', "is not a valid email address"),
        ("a@b@c.com", "is not a valid email address"),
        ("a@", "is not a valid email address"),
        ("ann", "is not a valid email address"),
        ("Ann <>", "empty address"),
        ('"Ann <a@b.com>', "never closed"),
        ('"Ann" Lee <a@b.com>', "text after its quotes"),
        ("Ann (boss) <a@b.com>", "put the whole name in double quotes"),
        ("Ann: <a@b.com>", "put the whole name in double quotes"),
        ("a@b.com,", "empty address"),
        ("a@b.com;; c@d.com", "empty address"),
        ("a@b.com\r\nBcc: evil@x.com", "line break (U+000D)"),
        ("Ann\n <a@b.com>", "line break (U+000A)"),
        ("a\x00@b.com", "control character (U+0000)"),
        ("Ann\x85 <a@b.com>", "control character (U+0085)"),
        ("Ann\u2028 <a@b.com>", "line break (U+2028)"),
        ("Ann\tLee <a@b.com>", "tab"),
        ("=?utf-8?q?evil=40x.com?= <a@b.com>", "encoded word"),
        ('"=?utf-8?b?ZXZpbA==?=" <a@b.com>', "encoded word"),
        ("=?utf-8?q?a?=@b.com", "encoded word"),
        ('"=\\?utf-8?q?bob=40evil.com?=" <a@b.com>', "encoded word"),
        ("a@localhost", "is not a valid email address"),
    ],
)
def test_refuses_malformed_lists(value: str, message: str) -> None:
    with pytest.raises(AddressError) as caught:
        parse_address_list(value)
    assert message in str(caught.value)


@given(st.text(alphabet=st.sampled_from('ab@.<>"\\,; \r\n=?x\u00e9'), max_size=30))
def test_any_text_gives_addresses_or_an_address_error(value: str) -> None:
    try:
        addresses = parse_address_list(value)
    except AddressError:
        return
    for address in addresses:
        assert "\r" not in address.display_name + address.addr_spec
        assert "\n" not in address.display_name + address.addr_spec
        assert address.addr_spec.count("@") == 1
        assert "=?" not in address.display_name + address.addr_spec


def test_address_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_address_list("nope")


def test_ascii_addr_spec_encodes_an_internationalised_domain() -> None:
    assert ascii_addr_spec("zoe@bücher.de") == "zoe@xn--bcher-kva.de"
    assert ascii_addr_spec("Ann@Example.COM") == "Ann@Example.COM"


def test_ascii_addr_spec_refuses_a_non_ascii_local_part() -> None:
    with pytest.raises(AddressError, match="only from, to, cc and bcc"):
        ascii_addr_spec("zoë@example.com")


def test_wire_addr_spec_keeps_a_non_ascii_local_part_and_encodes_the_domain() -> None:
    assert wire_addr_spec("zoë@bücher.de") == "zoë@xn--bcher-kva.de"
    assert wire_addr_spec("张伟@example.cn") == "张伟@example.cn"
    assert wire_addr_spec("Ann@Example.COM") == "Ann@Example.COM"


# --- values from the CSV: protect / reveal ----------------------------------------------


@pytest.mark.parametrize(
    ("template", "value", "expected"),
    [
        # In a display name a value is text, whatever it holds.
        ("{} <a@example.com>", "Doe, John", (Address("Doe, John", "a@example.com"),)),
        ('"{}" <a@example.com>', 'say "hi"', (Address('say "hi"', "a@example.com"),)),
        ("{} <a@example.com>", "b@evil.com>, <c@evil.com", None),
        ("{} <a@example.com>", "x\\", (Address("x\\", "a@example.com"),)),
        ('"{}" <a@example.com>', "x\\", (Address("x\\", "a@example.com"),)),
        ("{} <a@example.com>", "(c) [d]: e;", (Address("(c) [d]: e;", "a@example.com"),)),
        # In an address only its "@" is structure.
        ("{}", "ann@example.com", (Address("", "ann@example.com"),)),
        ("Ann <{}>", "ann@example.com", (Address("Ann", "ann@example.com"),)),
        ("{}@example.com", "ann", (Address("", "ann@example.com"),)),
        ("{}", "a@x.org, b@y.org", "is not one email address"),
        ("{}", "a@x.org;b@y.org", "is not one email address"),
        ("{}", "Eve <e@x.org>", "is not one email address"),
        ("Ann <{}>", "a@x.org>, <b@y.org", "is not one email address"),
        ("{}", '"a b"@x.org', "is not one email address"),
        ("{}", "=?utf-8?q?a?=@x.org", "encoded word"),
        ("{} <a@example.com>", "=?utf-8?q?b=40evil.com?=", "encoded word"),
        ('"{}" <a@example.com>', "=?utf-8?q?b=40evil.com?=", "encoded word"),
    ],
)
def test_a_protected_value_cannot_add_structure(
    template: str, value: str, expected: tuple[Address, ...] | str | None
) -> None:
    rendered = template.format(protect(value))
    if expected is None:  # text: the whole value is the display name
        expected = (Address(value, "a@example.com"),)
    if isinstance(expected, str):
        with pytest.raises(AddressError) as caught:
            parse_address_list(rendered)
        assert expected in str(caught.value)
        assert "\\U000f" not in ascii(str(caught.value))  # messages show the real characters
        return
    assert parse_address_list(rendered) == expected


def test_the_unquoted_author_text_keeps_its_rules() -> None:
    with pytest.raises(AddressError, match="put the whole name in double quotes"):
        parse_address_list("Doe, John <a@example.com>".replace(", John", ": John"))


@given(st.text(max_size=40))
def test_protect_then_reveal_is_the_identity(value: str) -> None:
    try:
        protected = protect(value)
    except AddressError:
        assert any(0xF0000 <= ord(c) <= 0xF00FF for c in value)
        return
    assert reveal(protected) == value
    assert not set(protected) & set(',;<>"\\()[]:@')


@given(st.text(alphabet=st.sampled_from('ab@.<>"\\,; =?x\u00e9'), max_size=30))
def test_a_protected_value_is_at_most_one_address(value: str) -> None:
    for template in ("{}", "{} <a@example.com>", '"{}" <a@example.com>', "Ann <{}>"):
        try:
            found = parse_address_list(template.format(protect(value)))
        except AddressError:
            continue
        assert len(found) <= 1
        if template == "{} <a@example.com>":
            assert found == (Address(value.strip(" "), "a@example.com"),)
        if template == '"{}" <a@example.com>':
            assert found == (Address(value, "a@example.com"),)


@pytest.mark.parametrize("name", ["Subject", "X-Campaign", "List-Unsubscribe", "X!#$%"])
def test_accepts_header_names(name: str) -> None:
    check_header_name(name)


@pytest.mark.parametrize("name", ["", "X Tag", "X:Tag", "X-Tä", "X-\x00", "X-\n"])
def test_refuses_header_names(name: str) -> None:
    with pytest.raises(HeaderError):
        check_header_name(name)


@pytest.mark.parametrize("value", ["", "plain", "tab\there", "Grüße 张伟", "=?not really"])
def test_accepts_header_values(value: str) -> None:
    check_header_value("Subject", value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("Hi\r\nBcc: x@evil.com", "line break (U+000D)"),
        ("Hi\nthere", "line break (U+000A)"),
        ("Hi\x00", "control character (U+0000)"),
        ("Hi\x1b[31m", "control character (U+001B)"),
        ("Hi\x7f", "control character (U+007F)"),
        ("Hi\x9b", "control character (U+009B)"),
        ("Hi\u2029", "line break (U+2029)"),
    ],
)
def test_refuses_header_values_that_could_inject(value: str, message: str) -> None:
    with pytest.raises(HeaderError) as caught:
        check_header_value("Subject", value)
    assert message in str(caught.value)
    assert "Subject" in str(caught.value)


_ADDRESS_PIECES = st.sampled_from(
    [
        "a",
        "Z",
        "0",
        ".",
        "..",
        "-",
        "+",
        "_",
        "!",
        "~",
        "'",
        "@",
        "xn--",
        "é",
        " ",
        '"',
        "(",
        "example.org",
        "EXAMPLE.COM",
        "localhost",
        "a-.org",
        "-a.org",
        "b.c",
        "1.2.3.4",
        "x" * 70,
    ]
)


@settings(max_examples=2000, deadline=None)
@given(st.lists(_ADDRESS_PIECES, min_size=1, max_size=8).map("".join))
def test_the_shortcut_for_plain_addresses_accepts_only_what_the_full_check_does(
    spec: str,
) -> None:
    # _plainly_valid skips email_validator for the usual address; it must never let
    # through one that email_validator refuses.
    if addresses._plainly_valid(spec):
        validate_email(spec, check_deliverability=False, allow_smtputf8=True)


def test_the_shortcut_takes_the_usual_address() -> None:
    assert addresses._plainly_valid("person.one+news@example.org")
    assert not addresses._plainly_valid("person@localhost")  # email_validator refuses it
    assert not addresses._plainly_valid("a" * 250 + "@example.org")  # too long

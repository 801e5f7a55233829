"""The read-back safety net never crashes, and header values are bounded before anything
parses them: end to end through ``batchmail`` and on ``headers.check_header_block``."""

from __future__ import annotations

import email
import email.policy
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from campaign_files import batchmail, people, write_campaign

from batchmail.addresses import Address
from batchmail.errors import Problem
from batchmail.fields import MAX_ADDRESS_VALUE, MAX_TEXT_VALUE, unstructured
from batchmail.headers import Header, _fold, check_header_block

# Names the email package's own folding turned into header bytes that its parser then
# crashed on (AttributeError, TypeError) while reading them back.
DOTTED_NAMES = [". " + "x " * 40 + "end", "." + "x" * 100]


@pytest.mark.parametrize("name", DOTTED_NAMES)
def test_a_parser_that_fails_on_a_value_gives_a_problem_not_a_traceback(name: str) -> None:
    value = (Address(name, "a@example.org"),)
    folded = _fold("To", value, False)  # what the email package writes for it
    problems = check_header_block(folded + b"\r\n", (Header("To", value, "message.to"),), False)
    assert len(problems) == 1
    key, message = problems[0]
    assert key == "message.to"
    assert "cannot read the To header back" in message


def test_names_starting_with_a_dot_pass_check_and_preview(tmp_path: Path) -> None:
    rows = people(3)
    rows[0]["name"], rows[1]["name"] = DOTTED_NAMES
    path = write_campaign(tmp_path, rows, smtp="embedded", html=None)
    checked = batchmail("check", path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "Traceback" not in checked.stderr
    for number, name in enumerate(DOTTED_NAMES, 1):
        preview = batchmail("preview", path, "--row", str(number))
        assert preview.returncode == 0, preview.stderr
        assert "Traceback" not in preview.stderr
        message = email.message_from_string(preview.stdout, policy=email.policy.default)
        (to,) = message["To"].addresses
        assert to.display_name == name


def _limited_memory() -> None:
    # 1 GiB of address space: a check of a few rows needs a fraction of it; reading a 1 MB
    # header value back took 24 GB.
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


def test_a_megabyte_in_subject_to_and_an_extra_header_is_refused_clearly(tmp_path: Path) -> None:
    rows = people(3)
    rows[1]["name"] = "é" * 1_000_000
    path = write_campaign(
        tmp_path,
        rows,
        smtp="embedded",
        message={"subject": "Hello {{ name }}", "headers": {"X-Note": "{{ name }}"}},
        html=None,
    )
    result = subprocess.run(
        [sys.executable, "-m", "batchmail", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_limited_memory,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    output = result.stdout + result.stderr
    for key, limit in [
        ("message.to", "10,000"),
        ("message.subject", "4,000"),
        ("message.headers.X-Note", "4,000"),
    ]:
        line = next(line for line in output.splitlines() if f"row 2, {key}:" in line)
        assert f"longer than {limit} characters" in line, line
    assert "row 1" not in output and "row 3" not in output


def test_the_limits_are_inclusive() -> None:
    problems: list[Problem] = []
    assert unstructured("Subject", "é" * MAX_TEXT_VALUE, "row 1", problems) is not None
    assert unstructured("Subject", "é" * (MAX_TEXT_VALUE + 1), "row 1", problems) is None
    assert [p.where for p in problems] == ["row 1"]
    assert MAX_ADDRESS_VALUE > MAX_TEXT_VALUE


def test_the_longest_subject_reads_back_in_bounded_memory() -> None:
    import tracemalloc

    from batchmail.rfc2047 import unstructured_field

    value = "é" * MAX_TEXT_VALUE
    field = unstructured_field("Subject", value).encode("ascii")
    tracemalloc.start()
    try:
        problems = check_header_block(field + b"\r\n", (Header("Subject", value, "s"),), False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert problems == []
    assert peak < 20_000_000  # bytes; the value is 8 KB of UTF-8

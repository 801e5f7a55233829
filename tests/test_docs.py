"""The README documents every command, flag and campaign key the code knows."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from batchmail.campaign import KEYS
from batchmail.cli import _parser

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def _reference_block() -> str:
    match = re.search(r"## The campaign file.*?```yaml\n(.*?)```", README, re.S)
    assert match, "the README has no campaign file reference"
    return match.group(1)


def test_every_campaign_key_is_in_the_reference() -> None:
    block = _reference_block()
    sections: dict[str, set[str]] = {"": set()}
    current = ""
    for line in block.splitlines():
        key = re.match(r"^( *)(#\s*)?([a-z0-9_]+):", line)
        if not key:
            continue
        indent, name = len(key.group(1)), key.group(3)
        if indent == 0:
            sections[""].add(name)
            current = name
            sections.setdefault(current, set())
        elif indent == 2:
            sections[current].add(name)
    for section, keys in KEYS.items():
        missing = keys - sections.get(section, set())
        assert not missing, f"README reference lacks {section or 'top-level'} keys {missing}"
        unknown = sections.get(section, set()) - keys
        assert not unknown, f"README documents {section} keys the loader refuses: {unknown}"


def test_every_command_and_flag_is_in_the_readme() -> None:
    parser = _parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in commands.choices.items():
        assert f"batchmail {name}" in README, name
        for action in sub._actions:
            for flag in action.option_strings:
                if flag.startswith("--") and flag != "--help":
                    assert flag in README, f"{name} {flag}"

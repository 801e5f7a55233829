"""Text from a CSV, a server or the journal, made safe to show on a terminal.

A recipient key, a server's reply or a file name can hold control characters: ESC starts
the sequences that clear the screen, retitle the window or rewrite what was printed before,
and the bidirectional overrides reorder what follows them. Shown as escapes (``\\x1b``,
``\\u202e``) they are seen, never obeyed. Only cli.py prints, and it prints through here.
"""

from __future__ import annotations

import re

# C0 but the line break, DEL, C1, and the bidirectional embeddings, overrides and isolates.
_CONTROLS = "\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069"
_CONTROL = re.compile(f"[{_CONTROLS}]")
_CONTROL_OR_LINE_BREAK = re.compile(f"[{_CONTROLS}\n]")
# What json.dumps(ensure_ascii=False) leaves as it is among those: it escapes C0 itself.
_RAW_IN_JSON = re.compile("[\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def shown(text: str, keep_line_breaks: bool = True) -> str:
    """``text`` with each control character written as an escape. Line breaks are kept for
    the output's own layout; a value that must stay on its line drops them too."""
    pattern = _CONTROL if keep_line_breaks else _CONTROL_OR_LINE_BREAK
    return pattern.sub(_escape, text)


def shown_json(text: str) -> str:
    """JSON text (as ``json.dumps`` writes it) with the control characters it left raw
    written as JSON escapes (``\\u009b``): the same JSON, safe on a terminal."""
    return _RAW_IN_JSON.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

"""What may go on the wire: 7-bit text (UTF-8 only in an SMTPUTF8 message), lines
ended by CRLF only, none longer than 998 octets (RFC 5322 2.1.1, RFC 5321 4.5.3.1.6)."""

from __future__ import annotations

MAX_LINE = 998  # octets, without the CRLF


def wire_problem(data: bytes, utf8: bool = False) -> str | None:
    """Why ``data`` cannot be sent as it is, or None."""
    if not data.isascii():
        if not utf8:
            return "the message would contain non-ASCII bytes"
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return "the message would contain bytes that are not UTF-8"
    lines = data.split(b"\r\n")
    if data.count(b"\r") != len(lines) - 1 or data.count(b"\n") != len(lines) - 1:
        return "the message would contain a bare CR or LF"
    if max(map(len, lines)) > MAX_LINE:
        return f"the message would contain a line longer than {MAX_LINE} octets"
    return None


def has_dot_lines(data: bytes) -> bool:
    """Whether a line of ``data`` (CRLF line ends) begins with a dot, which the DATA
    command's end-of-data marker makes the sender double (RFC 5321 4.5.2)."""
    if len(data) <= _SHORT:
        return data.startswith(b".") or b"\n." in data
    # A search for b"\n." stops at every line end: 140 us for a 100 KB attachment in
    # base64. From one dot to the next, at memchr speed, it takes 2 us (its only dot is in
    # its file name); past a few dots (text), the plain search does the rest.
    at = data.find(b".")
    for _ in range(_FEW_DOTS):
        if at < 0:
            return False
        if at == 0 or data[at - 1] == _LF:
            return True
        at = data.find(b".", at + 1)
    return at >= 0 and data.find(b"\n.", at - 1) >= 0


_SHORT = 16 * 1024
_FEW_DOTS = 32
_LF = ord("\n")

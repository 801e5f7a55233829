"""Every form of a password or token that could come back from a server, and taking them out of
text before it is shown, logged or journalled.

A server may echo what the client sent during AUTH: the raw secret, the base64 of a whole AUTH
step (PLAIN's ``\\0user\\0password``, LOGIN's password, the XOAUTH2 string with its bearer
token), or the secret decoded. The exact lines sent are added as they go (``add_sent``);
besides, the secret's base64 is taken out wherever it starts in an encoded stream: base64
turns each 3 bytes into 4 characters, so the secret, at any of the 3 offsets, leaves one of 3
runs of characters that only it determines.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable

REDACTED = "***"
_SHORTEST = 4  # shorter runs are too likely to be ordinary text; the whole forms still go


class SecretForms:
    """Takes every known form of the secrets out of a text (``redact``)."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._raw = {secret for secret in secrets if secret}
        self._forms: set[str] = set()
        for secret in self._raw:
            self._forms.update(_base64_runs(secret.encode("utf-8", "replace")))
        self._longest_first: list[str] | None = None

    def add_sent(self, line: str) -> None:
        """A line sent during AUTH: an AUTH command's initial response, or a response to a
        challenge. (Decoded, it holds the raw secret, which goes anyway, or the username,
        which is no secret.)"""
        text = line.strip()
        if len(text) >= _SHORTEST:
            self._forms.add(text)
            self._longest_first = None

    def redact(self, text: str) -> str:
        if self._longest_first is None:
            # Longest first: a form inside a longer one must not break the longer one apart.
            self._longest_first = sorted(self._forms | self._raw, key=len, reverse=True)
        for form in self._longest_first:
            if form in text:
                text = text.replace(form, REDACTED)
        return text


def _base64_runs(secret: bytes) -> set[str]:
    """For each offset of ``secret`` in a base64 stream, the characters only it determines."""
    runs = set()
    for offset in range(3):
        encoded = base64.b64encode(bytes(offset) + secret).decode().rstrip("=")
        bits_before, bits_end = 8 * offset, 8 * (offset + len(secret))
        first = -(-bits_before // 6)  # the first character with no bit of the padding
        last = bits_end // 6  # characters from here on share bits with what follows
        run = encoded[first:last]
        if len(run) >= _SHORTEST:
            runs.add(run)
    return runs

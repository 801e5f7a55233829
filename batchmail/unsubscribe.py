"""One-click unsubscribe (RFC 2369, RFC 8058): pure checks of the URL and the mailto
address, and the two header values.

``List-Unsubscribe: <https://...>, <mailto:...>`` and ``List-Unsubscribe-Post:
List-Unsubscribe=One-Click``. The URL is rendered per row; it goes into a header between
angle brackets and into the body, so it may hold only the characters RFC 3986 allows in
a URL, and neither a comma (the header's separator) nor anything that could end the
brackets or the header. Nothing is percent-encoded on the author's behalf: a value that
needs it is refused, and ``| urlencode`` in the template is the way to encode a column.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from batchmail.addresses import AddressError, ascii_addr_spec, parse_address_list

POST_VALUE = "List-Unsubscribe=One-Click"  # RFC 8058 section 3.1, exactly
# RFC 3986 unreserved, gen-delims, sub-delims and "%", without "," (the list separator).
_URL_CHARACTERS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+;=%]*")
_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
# atext and "." only: the address goes into a mailto: URL as it is, unencoded.
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9!$'*+\-=_~.]+@[A-Za-z0-9.\-]+")


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be the one-click unsubscribe URL, or None."""
    shown = repr(url)
    if not url:
        return "renders to an empty URL"
    if any(char in url for char in "\r\n\u2028\u2029"):
        return f"{shown} contains a line break"
    if any(char.isspace() for char in url):
        return f"{shown} contains whitespace"
    if "<" in url or ">" in url:
        return f"{shown} contains an angle bracket"
    if "," in url:
        return f"{shown} contains a comma (it separates the List-Unsubscribe entries); write %2C"
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "http":
        return f"{shown} is http://; one-click unsubscribe (RFC 8058) needs https://"
    if scheme != "https" or not url[6:].startswith("//"):
        return f"{shown} is not an https:// URL"
    bad = next((char for char in url if not _URL_CHARACTERS.fullmatch(char)), None)
    if bad is not None:
        return (
            f"{shown} contains {bad!r}, which a URL cannot hold as it is; percent-encode it "
            "(e.g. {{ token | urlencode }})"
        )
    if _PERCENT.search(url):
        return f"{shown} contains a '%' that does not start a %XX escape"
    try:
        host = urlsplit(url).hostname
    except ValueError as exc:  # e.g. an unbalanced "[" in the host
        return f"{shown} is not a valid URL: {exc}"
    if not host:
        return f"{shown} has no host name"
    return None


def mailto_problem(address: str) -> str | None:
    """Why ``address`` cannot be the mailto: of List-Unsubscribe, or None."""
    try:
        found = parse_address_list(address)
        if len(found) != 1 or found[0].display_name:
            return f"{address!r} is not one plain address (no name, no list): unsub@example.org"
        spec = ascii_addr_spec(found[0].addr_spec)
    except AddressError as exc:
        return str(exc)
    if spec != address.strip(" \t") or not _PLAIN_ADDRESS.fullmatch(spec):
        return (
            f"{address!r} cannot go into a mailto: URL as it is; use an address of letters, "
            "digits and . _ + - only"
        )
    return None


def list_unsubscribe(url: str, mailto: str) -> str:
    """The List-Unsubscribe value: the HTTPS URL first, then the mailto if there is one."""
    address = mailto.strip(" \t")
    return f"<{url}>, <mailto:{address}>" if address else f"<{url}>"

"""The campaign file: YAML in, frozen dataclasses out.

Every error names the key path and the line (``smtp.port: expected an integer,
line 6``); unknown keys are refused so a misspelt ``atachments`` is never
silently ignored. Paths are resolved relative to the campaign file. Nothing
downstream of this module reads raw YAML.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from batchmail.byte_sizes import parse_size
from batchmail.errors import CampaignError
from batchmail.unsubscribe import mailto_problem
from batchmail.yaml_fields import MISSING, FieldReader, describe
from batchmail.yaml_lines import read_yaml

DEFAULT_MAX_SIZE = 25_000_000  # message.max_size: see MessageConfig

Security = Literal["starttls", "tls", "none"]
DEFAULT_PORTS: dict[str, int] = {"starttls": 587, "tls": 465, "none": 25}


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    security: Security
    username: str | None = None
    password_env: str | None = None
    password_command: str | None = None
    # OAuth2 (AUTH XOAUTH2): the access token is this command's first line of output.
    oauth2_token_command: str | None = None
    timeout: float = 30.0
    # RFC 5321 4.5.3.2.6: wait long for the reply to the end of data, so a slow
    # server does not turn a delivered message into a retried one.
    data_timeout: float = 600.0
    ca_file: Path | None = None
    insecure_auth: bool = False
    # ``smtp: embedded``: the in-process aiosmtpd sink; host/port are chosen at run time.
    embedded: bool = False
    # Several sender accounts (``smtp`` as a list): which From addresses this one sends,
    # as globs or exact addresses (case-insensitive); () takes every From.
    match: tuple[str, ...] = ()
    daily_limit: int | None = None  # None: send.daily_limit
    rate: float | None = None  # None: send.rate
    key_path: str = "smtp"  # how messages name it: "smtp", or "smtp[1]" in a list


@dataclass(frozen=True)
class RecipientsConfig:
    file: Path
    encoding: str = "utf-8"
    key: str = "email"
    exclude: tuple[Path, ...] = ()  # address lists never to be mailed


@dataclass(frozen=True)
class MessageConfig:
    """Every str field is a Jinja2 template source over the CSV row."""

    from_: str
    to: str
    subject: str
    cc: str = ""
    bcc: str = ""
    reply_to: str = ""
    text: Path | None = None  # template file
    html: Path | None = None  # template file
    markdown: Path | None = None  # template file: Markdown, for the HTML (and text) part
    inline_css: bool = True  # move <style> rules into style attributes of the HTML part
    attachments: tuple[str, ...] = ()  # path templates, relative to the campaign directory
    headers: tuple[tuple[str, str], ...] = ()  # (name, value template)
    unsubscribe: UnsubscribeConfig | None = None  # List-Unsubscribe (RFC 2369, RFC 8058)
    # Bytes: `check` warns about a larger message (0: never). Gmail and Microsoft 365 take
    # at most 25 MB, base64-encoded attachments included.
    max_size: int = DEFAULT_MAX_SIZE


@dataclass(frozen=True)
class UnsubscribeConfig:
    """``message.unsubscribe``: the one-click HTTPS URL (a template) and a mailto address."""

    url: str  # a Jinja2 template; must render to an https:// URL
    mailto: str = ""  # one address, validated at load time; "" for none


@dataclass(frozen=True)
class SendConfig:
    rate: float = 0.0  # messages per second; 0 = no limit
    max_per_session: int = 0  # 0 = never reconnect on purpose
    retries: int = 3  # further attempts after a transient failure
    retry_delay: float = 2.0  # seconds before the first retry; doubles each time
    window: int = 0  # messages per pipelined batch; 0 = the transport's own choice
    sessions: int = 1  # parallel SMTP sessions to the same server
    daily_limit: int = 0  # at most this many messages in any 24 hours; 0 = no limit
    per_domain_rate: tuple[tuple[str, float], ...] = ()  # (recipient domain, messages/s)


@dataclass(frozen=True)
class Campaign:
    path: Path  # the campaign file, absolute
    name: str
    smtp: SmtpConfig
    recipients: RecipientsConfig
    message: MessageConfig
    send: SendConfig
    # key path ("message.subject") -> 1-based line in the campaign file, for error messages
    lines: Mapping[str, int] = field(default_factory=dict, compare=False, hash=False)
    # Every sender account in order (``smtp`` is the first); () in a Campaign built by hand.
    accounts: tuple[SmtpConfig, ...] = ()
    # What Message-IDs are made from (see campaign_id); "" until set there: the name.
    message_id_seed: str = ""

    @property
    def smtp_accounts(self) -> tuple[SmtpConfig, ...]:
        """The sender accounts: several when ``smtp`` is a list, else just ``smtp``."""
        return self.accounts or (self.smtp,)

    @property
    def directory(self) -> Path:
        return self.path.parent

    @property
    def state_dir(self) -> Path:
        """``.batchmail/<name>/`` beside the campaign file: journal, outbox, sink."""
        return self.directory / ".batchmail" / self.name

    def where(self, key_path: str) -> str:
        """Where a key sits, for error messages: ``welcome.yaml, message.subject, line 12``;
        an item of a list (``message.attachments[1]``) gets the list's line."""
        line = self.lines.get(key_path.partition("[")[0])
        suffix = f", line {line}" if line else ""
        return f"{self.path.name}, {key_path}{suffix}"


def load_campaign(path: Path | str) -> Campaign:
    """Read and validate a campaign file; raise CampaignError listing every problem found."""
    path = Path(path).absolute()
    document = read_yaml(path)
    reader = _Reader(path)
    campaign = reader.campaign(document)
    if reader.problems:
        raise CampaignError(reader.problems)
    assert campaign is not None
    return campaign


# --- the schema -----------------------------------------------------------------------------

# Every key the campaign file may hold, by section ("" is the top level). The README's
# reference is checked against this by the tests.
KEYS: dict[str, frozenset[str]] = {
    "": frozenset({"name", "smtp", "recipients", "message", "send"}),
    "smtp": frozenset(
        {
            "host",
            "port",
            "security",
            "username",
            "password_env",
            "password_command",
            "oauth2_token_command",
            "timeout",
            "data_timeout",
            "ca_file",
            "insecure_auth",
            # only meaningful for one of several accounts (smtp as a list), allowed in both
            "match",
            "daily_limit",
            "rate",
        }
    ),
    "recipients": frozenset({"file", "encoding", "key", "exclude"}),
    "message": frozenset(
        {
            "from",
            "to",
            "cc",
            "bcc",
            "reply_to",
            "subject",
            "text",
            "html",
            "markdown",
            "inline_css",
            "attachments",
            "headers",
            "unsubscribe",
            "max_size",
        }
    ),
    "send": frozenset(
        {
            "rate",
            "max_per_session",
            "retries",
            "retry_delay",
            "window",
            "sessions",
            "daily_limit",
            "per_domain_rate",
        }
    ),
}

# The keys of ``message.unsubscribe`` (a mapping inside a section).
UNSUBSCRIBE_KEYS = frozenset({"url", "mailto"})

_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


class _Reader(FieldReader):
    """Walks the YAML document, building dataclasses and collecting every problem."""

    # -- sections

    def campaign(self, document: Any) -> Campaign | None:
        top = self.section(document, "", KEYS[""])
        if top is None:
            return None
        name = self.string(top, "name", default=self.path.stem)
        if name and not _NAME_PATTERN.fullmatch(name):
            self.problem(
                "name",
                f"{name!r} may hold only letters, digits, '.', '_' and '-' "
                "(it names the state directory)",
            )
        smtp = self.smtp(top.get("smtp", MISSING))
        recipients = self.recipients(top.get("recipients", MISSING))
        message = self.message(top.get("message", MISSING))
        send = self.send(top.get("send") if top.get("send") is not None else {})
        if self.problems or None in (smtp, recipients, message, send):
            return None
        assert smtp and recipients and message and send
        return Campaign(self.path, name, smtp[0], recipients, message, send, dict(self.lines), smtp)

    def smtp(self, value: Any) -> tuple[SmtpConfig, ...] | None:
        """One account (a mapping, or `embedded`), or several (a list of mappings)."""
        if value is MISSING or value is None:
            self.problem(
                "smtp",
                "missing (a server mapping, a list of them, or `embedded` for the "
                "built-in test server)",
            )
            return None
        if value == "embedded":
            return (SmtpConfig(host="127.0.0.1", port=0, security="none", embedded=True),)
        if not isinstance(value, list):
            account = self.smtp_account(value, "smtp")
            return (account,) if account else None
        if not value:
            self.problem("smtp", "an empty list: give at least one account")
            return None
        accounts = [self.smtp_account(item, f"smtp[{index}]") for index, item in enumerate(value)]
        for account in accounts[:-1]:
            if account is not None and not account.match:
                self.problem(
                    f"{account.key_path}.match",
                    "missing: every account but the last needs `match` (an account without "
                    "it takes every message, so the ones after it would never be used)",
                    self.lines.get(account.key_path),
                )
        if any(account is None for account in accounts):
            return None
        return tuple(account for account in accounts if account is not None)

    def smtp_account(self, value: Any, key_path: str) -> SmtpConfig | None:
        values = self.section(value, key_path, KEYS["smtp"])
        if values is None:
            return None
        host = self.string(values, f"{key_path}.host")
        security = self.string(values, f"{key_path}.security", default="starttls")
        if security not in DEFAULT_PORTS:
            self.problem(
                f"{key_path}.security", f"expected starttls, tls or none, got {security!r}"
            )
            security = "starttls"
        port = self.integer(values, f"{key_path}.port", DEFAULT_PORTS[security], 1, 65535)
        username = self.string(values, f"{key_path}.username", default=None) or None
        sources = {
            key: self.string(values, f"{key_path}.{key}", default=None) or None
            for key in ("password_env", "password_command", "oauth2_token_command")
        }
        given = [key for key, source in sources.items() if source]
        if len(given) > 1:
            self.problem(
                f"{key_path}.{given[-1]}",
                f"give only one of password_env, password_command and oauth2_token_command "
                f"(found {' and '.join(given)})",
            )
        if sources["oauth2_token_command"] and not username:
            self.problem(
                f"{key_path}.oauth2_token_command",
                f"needs {key_path}.username: the account the token is for (AUTH XOAUTH2)",
            )
        insecure_auth = self.boolean(values, f"{key_path}.insecure_auth", False)
        if username and security == "none" and not insecure_auth:
            self.problem(
                f"{key_path}.username",
                "refusing to send a password or token over an unencrypted "
                "connection (security: none); use starttls or tls, or set "
                "`insecure_auth: true` for a trusted local relay",
            )
        daily_limit = values.get("daily_limit")
        rate = values.get("rate")
        return SmtpConfig(
            host=host if host is not MISSING else "",
            port=port,
            security=security,
            username=username,
            password_env=sources["password_env"],
            password_command=sources["password_command"],
            oauth2_token_command=sources["oauth2_token_command"],
            timeout=self.number(values, f"{key_path}.timeout", 30.0, positive=True),
            data_timeout=self.number(values, f"{key_path}.data_timeout", 600.0, positive=True),
            ca_file=self.file(values, f"{key_path}.ca_file", required=False),
            insecure_auth=insecure_auth,
            match=self.sender_patterns(values.get("match"), f"{key_path}.match"),
            daily_limit=None
            if daily_limit is None
            else self.integer(values, f"{key_path}.daily_limit", 0),
            rate=None if rate is None else self.number(values, f"{key_path}.rate", 0.0),
            key_path=key_path,
        )

    def sender_patterns(self, value: Any, key_path: str) -> tuple[str, ...]:
        """``match``: an address or a glob on it (``*@sales.example.com``), or a list of them."""
        if value is None:
            return ()
        items = value if isinstance(value, list) else [value]
        patterns: list[str] = []
        for item in items:
            if not isinstance(item, str) or not ("@" in item.strip() or item.strip() == "*"):
                self.problem(
                    key_path,
                    f'expected a From address or a pattern such as "*@sales.example.com", '
                    f"or a list of them; got {describe(item)}",
                )
            else:
                patterns.append(item.strip())
        return tuple(patterns)

    def recipients(self, value: Any) -> RecipientsConfig | None:
        if value is MISSING or value is None:
            self.problem("recipients", "missing (a mapping with at least `file:`)")
            return None
        values = self.section(value, "recipients", KEYS["recipients"])
        if values is None:
            return None
        file = self.file(values, "recipients.file", required=True)
        encoding = self.string(values, "recipients.encoding", default="utf-8")
        if not _text_encoding(encoding):
            self.problem(
                "recipients.encoding",
                f"unknown encoding {encoding!r} (a text encoding, e.g. utf-8, cp1252, latin-1,"
                " gbk)",
            )
        key = self.string(values, "recipients.key", default="email")
        if not key:
            self.problem("recipients.key", "must name a column")
        exclude = self.files(values, "recipients.exclude")
        return RecipientsConfig(file, encoding, key, exclude) if file else None

    def files(self, values: dict[str, Any], key_path: str) -> tuple[Path, ...]:
        """A list of existing files (a single path is taken as a list of one)."""
        value = values.get(key_path.rsplit(".", 1)[-1])
        if value is None:
            return ()
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list):
            self.problem(key_path, "expected a list of file paths")
            return ()
        paths = []
        for index, item in enumerate(items):
            item_path = f"{key_path}[{index}]"
            found = self.file({item_path.rsplit(".", 1)[-1]: item}, item_path, required=True)
            if found:
                paths.append(found)
        return tuple(paths)

    def message(self, value: Any) -> MessageConfig | None:
        if value is MISSING or value is None:
            self.problem("message", "missing (from, to, subject and a text or html template)")
            return None
        values = self.section(value, "message", KEYS["message"])
        if values is None:
            return None
        from_ = self.string(values, "message.from")
        to = self.string(values, "message.to")
        subject = self.string(values, "message.subject")
        text = self.file(values, "message.text", required=False)
        html = self.file(values, "message.html", required=False)
        markdown = self.file(values, "message.markdown", required=False)
        given = {key for key in ("text", "html", "markdown") if values.get(key) not in (None, "")}
        if not given:
            self.problem(
                "message",
                "needs a `text` or an `html` template (or both), or a `markdown` one",
                self.lines.get("message"),
            )
        if {"html", "markdown"} <= given:
            self.problem(
                "message.markdown",
                "give `markdown` or `html`, not both: the HTML part is made from the "
                "Markdown template",
            )
        return MessageConfig(
            from_=from_ if from_ is not MISSING else "",
            to=to if to is not MISSING else "",
            subject=subject if subject is not MISSING else "",
            cc=self.string(values, "message.cc", default=""),
            bcc=self.string(values, "message.bcc", default=""),
            reply_to=self.string(values, "message.reply_to", default=""),
            text=text,
            html=html,
            markdown=markdown,
            inline_css=self.boolean(values, "message.inline_css", True),
            attachments=self.attachments(values.get("attachments")),
            headers=self.headers(values.get("headers")),
            unsubscribe=self.unsubscribe(values.get("unsubscribe")),
            max_size=self.max_size(values.get("max_size")),
        )

    def max_size(self, value: Any) -> int:
        if value is None:
            return DEFAULT_MAX_SIZE
        size = parse_size(value)
        if isinstance(size, str):
            self.problem("message.max_size", size)
            return DEFAULT_MAX_SIZE
        return size

    def unsubscribe(self, value: Any) -> UnsubscribeConfig | None:
        if value is None:
            return None
        values = self.section(value, "message.unsubscribe", UNSUBSCRIBE_KEYS)
        if values is None:
            return None
        url = self.string(values, "message.unsubscribe.url", default="")
        if not url.strip():
            self.problem(
                "message.unsubscribe.url",
                "missing: one-click unsubscribe (RFC 8058) needs an https:// URL "
                '(e.g. "https://example.org/u/{{ token }}")',
                self.lines.get("message.unsubscribe"),
            )
        mailto = self.string(values, "message.unsubscribe.mailto", default="")
        if mailto:
            trouble = mailto_problem(mailto)
            if trouble:
                self.problem("message.unsubscribe.mailto", trouble)
        return UnsubscribeConfig(url, mailto)

    def attachments(self, value: Any) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            self.problem("message.attachments", "expected a list of file paths")
            return ()
        paths: list[str] = []
        for index, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                self.problem(
                    f"message.attachments[{index}]",
                    "expected a file path",
                    self.lines.get("message.attachments"),
                )
            else:
                paths.append(item)
        return tuple(paths)

    def headers(self, value: Any) -> tuple[tuple[str, str], ...]:
        if value is None:
            return ()
        if not isinstance(value, dict):
            self.problem("message.headers", "expected a mapping of header name to value")
            return ()
        headers: list[tuple[str, str]] = []
        key_lines = getattr(value, "key_lines", {})
        for name, item in value.items():
            key_path = f"message.headers.{name}"
            self.lines[key_path] = key_lines.get(name, 0)
            if not isinstance(name, str) or not re.fullmatch(r"[!-9;-~]+", name):
                self.problem(key_path, "not a valid header name")
            elif isinstance(item, bool) or not isinstance(item, str | int | float):
                self.problem(key_path, "expected a string")
            else:
                headers.append((name, str(item)))
        return tuple(headers)

    def send(self, value: Any) -> SendConfig | None:
        values = self.section(value, "send", KEYS["send"])
        if values is None:
            return None
        return SendConfig(
            rate=self.number(values, "send.rate", 0.0),
            max_per_session=self.integer(values, "send.max_per_session", 0),
            retries=self.integer(values, "send.retries", 3, 0, 100),
            retry_delay=self.number(values, "send.retry_delay", 2.0),
            window=self.integer(values, "send.window", 0, 0, 1000),
            sessions=self.integer(values, "send.sessions", 1, 1, 64),
            daily_limit=self.integer(values, "send.daily_limit", 0),
            per_domain_rate=self.domain_rates(values.get("per_domain_rate")),
        )

    def domain_rates(self, value: Any) -> tuple[tuple[str, float], ...]:
        if value is None:
            return ()
        if not isinstance(value, dict):
            self.problem("send.per_domain_rate", "expected a mapping of domain to messages/s")
            return ()
        rates = []
        for domain, rate in value.items():
            key_path = f"send.per_domain_rate.{domain}"
            self.lines[key_path] = getattr(value, "key_lines", {}).get(domain, 0)
            number = self.number({key_path.rsplit(".", 1)[-1]: rate}, key_path, 0.0, True)
            if not isinstance(domain, str) or "@" in domain or not domain.strip(". "):
                self.problem(key_path, "expected a domain name such as gmail.com")
            elif number:
                rates.append((domain.strip().lower().rstrip("."), number))
        return tuple(rates)


def _text_encoding(name: str) -> bool:
    """Whether ``name`` is a codec that turns bytes into text and back. codecs.lookup alone
    also knows bytes-to-bytes codecs (base64, zlib) and "undefined", which decode nothing."""
    try:
        return "email,name\r\n".encode(name).decode(name) == "email,name\r\n"
    except (LookupError, UnicodeError, ValueError):  # ValueError: a NUL in the name
        return False

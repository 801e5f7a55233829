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

from batchmail.errors import CampaignError
from batchmail.yaml_fields import MISSING, FieldReader
from batchmail.yaml_lines import read_yaml

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
    timeout: float = 30.0
    # RFC 5321 4.5.3.2.6: wait long for the reply to the end of data, so a slow
    # server does not turn a delivered message into a retried one.
    data_timeout: float = 600.0
    ca_file: Path | None = None
    insecure_auth: bool = False
    # ``smtp: embedded``: the in-process aiosmtpd sink; host/port are chosen at run time.
    embedded: bool = False


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
    attachments: tuple[str, ...] = ()  # path templates, relative to the campaign directory
    headers: tuple[tuple[str, str], ...] = ()  # (name, value template)


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

    @property
    def directory(self) -> Path:
        return self.path.parent

    @property
    def state_dir(self) -> Path:
        """``.batchmail/<name>/`` beside the campaign file: journal, outbox, sink."""
        return self.directory / ".batchmail" / self.name

    def where(self, key_path: str) -> str:
        """Where a key sits, for error messages: ``welcome.yaml, message.subject, line 12``."""
        line = self.lines.get(key_path)
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
            "timeout",
            "data_timeout",
            "ca_file",
            "insecure_auth",
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
            "attachments",
            "headers",
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
        return Campaign(self.path, name, smtp, recipients, message, send, dict(self.lines))

    def smtp(self, value: Any) -> SmtpConfig | None:
        if value is MISSING or value is None:
            self.problem(
                "smtp", "missing (a server mapping, or `embedded` for the built-in test server)"
            )
            return None
        if value == "embedded":
            return SmtpConfig(host="127.0.0.1", port=0, security="none", embedded=True)
        values = self.section(value, "smtp", KEYS["smtp"])
        if values is None:
            return None
        host = self.string(values, "smtp.host")
        security = self.string(values, "smtp.security", default="starttls")
        if security not in DEFAULT_PORTS:
            self.problem("smtp.security", f"expected starttls, tls or none, got {security!r}")
            security = "starttls"
        port = self.integer(values, "smtp.port", DEFAULT_PORTS[security], 1, 65535)
        username = self.string(values, "smtp.username", default=None) or None
        password_env = self.string(values, "smtp.password_env", default=None) or None
        password_command = self.string(values, "smtp.password_command", default=None) or None
        if password_env and password_command:
            self.problem("smtp.password_command", "give password_env or password_command, not both")
        insecure_auth = self.boolean(values, "smtp.insecure_auth", False)
        if username and security == "none" and not insecure_auth:
            self.problem(
                "smtp.username",
                "refusing to send a password over an unencrypted "
                "connection (security: none); use starttls or tls, or set "
                "`insecure_auth: true` for a trusted local relay",
            )
        return SmtpConfig(
            host=host if host is not MISSING else "",
            port=port,
            security=security,
            username=username,
            password_env=password_env,
            password_command=password_command,
            timeout=self.number(values, "smtp.timeout", 30.0, positive=True),
            data_timeout=self.number(values, "smtp.data_timeout", 600.0, positive=True),
            ca_file=self.file(values, "smtp.ca_file", required=False),
            insecure_auth=insecure_auth,
        )

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
        if values.get("text") in (None, "") and values.get("html") in (None, ""):
            self.problem(
                "message",
                "needs a `text` or an `html` template (or both)",
                self.lines.get("message"),
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
            attachments=self.attachments(values.get("attachments")),
            headers=self.headers(values.get("headers")),
        )

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

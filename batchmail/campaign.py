"""The campaign file: YAML in, frozen dataclasses out.

Every error names the key path and the line (``smtp.port: expected an integer,
line 6``); unknown keys are refused so a misspelt ``atachments`` is never
silently ignored. Paths are resolved relative to the campaign file. Nothing
downstream of this module reads raw YAML.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

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

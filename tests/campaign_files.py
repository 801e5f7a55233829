"""Write real campaign directories (YAML, CSV, templates) for end-to-end tests, and run the
real ``batchmail`` command on them in a subprocess."""

from __future__ import annotations

import csv
import email
import email.policy
import io
import os
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import yaml
from servers import SmtpTestServer


def write_campaign(
    directory: Path,
    rows: list[dict[str, str]],
    *,
    server: SmtpTestServer | None = None,
    smtp: dict[str, Any] | str | None = None,
    message: dict[str, Any] | None = None,
    send: dict[str, Any] | None = None,
    text: str = "Dear {{ name }},\n\nyour code is {{ code }}.\n",
    html: str | None = "<p>Dear {{ name }}, your code is <b>{{ code }}</b>.</p>\n",
    name: str = "test-campaign",
) -> Path:
    """A campaign in ``directory`` sending ``rows`` to ``server`` (or ``smtp`` as given)."""
    directory.mkdir(parents=True, exist_ok=True)
    columns = list(rows[0]) if rows else ["email", "name", "code"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    (directory / "people.csv").write_text(buffer.getvalue(), encoding="utf-8")
    (directory / "body.txt.j2").write_text(text, encoding="utf-8")
    if html is not None:
        (directory / "body.html.j2").write_text(html, encoding="utf-8")
    if smtp is None:
        assert server is not None
        smtp = {
            "host": server.host,
            "port": server.port,
            "security": server.security,
            "timeout": 5,
            "data_timeout": 5,
        }
        if server.ca_file:
            smtp["ca_file"] = str(server.ca_file)
    document: dict[str, Any] = {
        "name": name,
        "smtp": smtp,
        "recipients": {"file": "people.csv"},
        "message": {
            "from": "Sender <sender@example.com>",
            "to": "{{ name }} <{{ email }}>",
            "subject": "Hello {{ name }}",
            "text": "body.txt.j2",
            **({"html": "body.html.j2"} if html is not None else {}),
            **(message or {}),
        },
        "send": {"retries": 2, "retry_delay": 0.05, **(send or {})},
    }
    path = directory / "campaign.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def people(count: int, start: int = 1) -> list[dict[str, str]]:
    return [
        {"email": f"person{i}@example.org", "name": f"Person {i}", "code": f"C{i:05d}"}
        for i in range(start, start + count)
    ]


def batchmail(
    *args: str | Path,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    stdin: int | None = subprocess.DEVNULL,
) -> subprocess.CompletedProcess[str]:
    """Run the real command line (this interpreter's batchmail) and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "batchmail", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=stdin,
        env={**os.environ, **(env or {})},
    )


def parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def status_json(campaign: Path) -> dict[str, Any]:
    import json

    result = batchmail("status", campaign, "--json")
    assert result.returncode in (0, 1), result.stderr
    return json.loads(result.stdout)

"""The benchmark's content, written once per scenario and read by every contender.

One directory holds the recipients CSV, the Jinja2 text and HTML templates (about 2 KB of
message in all), an optional 100 KB PDF, a batchmail campaign over them, and the same message
as a mailmerge template with its server configuration. The smtplib baseline reads the same
CSV and templates. Everything is deterministic: the same count gives the same bytes.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path

import yaml

FROM = "Example Widgets <news@example.com>"
TO = "{{ name }} <{{ email }}>"
SUBJECT = "{{ name }}, your {{ plan }} plan is ready"
PDF_NAME = "guide.pdf"
PDF_SIZE = 100 * 1024

TEXT = """\
Dear {{ name }},

thank you for joining the {{ plan }} plan at Example Widgets. Your member number is
{{ code }}, and everything we send you goes to {{ email }}.

Here is what happens next:

  1. Your welcome kit leaves our warehouse in {{ city }} within two working days.
  2. Your first invoice is due in 30 days; nothing is charged before then.
  3. You can change or cancel the {{ plan }} plan at any time from your account page.

If you did not sign up, or if any of these details are wrong, reply to this message and
quote your member number {{ code }}; a person, not a robot, will answer within a day.

We are glad to have you with us, {{ name }}.

Kind regards,
The Example Widgets team
"""

HTML = """\
<!DOCTYPE html>
<html>
<body style="font-family: sans-serif; line-height: 1.4">
<p>Dear {{ name }},</p>
<p>thank you for joining the <strong>{{ plan }}</strong> plan at Example Widgets. Your
member number is <code>{{ code }}</code>, and everything we send you goes to
<a href="mailto:{{ email }}">{{ email }}</a>.</p>
<p>Here is what happens next:</p>
<ol>
<li>Your welcome kit leaves our warehouse in {{ city }} within two working days.</li>
<li>Your first invoice is due in 30 days; nothing is charged before then.</li>
<li>You can change or cancel the {{ plan }} plan at any time from your account page.</li>
</ol>
<p>If you did not sign up, or if any of these details are wrong, reply to this message
and quote your member number {{ code }}; a person, not a robot, will answer within a
day.</p>
<p>We are glad to have you with us, {{ name }}.</p>
<p>Kind regards,<br>The Example Widgets team</p>
</body>
</html>
"""

# A note of about 500 bytes, text only: where the objects around a message weigh most.
SHORT_TEXT = """\
Dear {{ name }},

your member number is {{ code }}. See you in {{ city }}.

The Example Widgets team
"""

_CITIES = ["Lyon", "Leeds", "Porto", "Graz", "Turku", "Gdansk", "Bergen", "Ghent"]
_PLANS = ["Basic", "Standard", "Premium", "Family"]


@dataclass(frozen=True)
class Workload:
    directory: Path
    count: int
    attachment: bool
    send_options: tuple[tuple[str, object], ...] = ()  # more `send:` keys, e.g. window
    short: bool = False  # SHORT_TEXT alone, not the text + HTML message

    @property
    def campaign(self) -> Path:
        return self.directory / "campaign.yaml"

    @property
    def csv(self) -> Path:
        return self.directory / "people.csv"

    @property
    def pdf(self) -> Path | None:
        return self.directory / PDF_NAME if self.attachment else None

    @property
    def mailmerge_template(self) -> Path:
        return self.directory / "mailmerge_template.txt"

    def mailmerge_config(self, port: int) -> Path:
        path = self.directory / f"mailmerge_server_{port}.conf"
        path.write_text(f"[smtp_server]\nhost = 127.0.0.1\nport = {port}\n")
        return path

    def write_campaign(self, port: int, *, sessions: int = 1, name: str = "bench") -> Path:
        """The batchmail campaign for a server on 127.0.0.1:``port``."""
        message: dict[str, object] = {"from": FROM, "to": TO, "subject": SUBJECT}
        if self.short:
            message["text"] = "short.txt.j2"
        else:
            message.update(text="body.txt.j2", html="body.html.j2")
        if self.attachment:
            message["attachments"] = [PDF_NAME]
        document = {
            "name": name,
            "smtp": {"host": "127.0.0.1", "port": port, "security": "none", "timeout": 60},
            "recipients": {"file": self.csv.name, "key": "email"},
            "message": message,
            "send": {**dict(self.send_options), "sessions": sessions},
        }
        self.campaign.write_text(yaml.safe_dump(document, sort_keys=False))
        return self.campaign


def write_workload(
    directory: Path,
    count: int,
    attachment: bool,
    send_options: tuple[tuple[str, object], ...] = (),
    short: bool = False,
) -> Workload:
    """Write the CSV, templates, PDF and mailmerge template (not yet the campaign file);
    a directory completed before with the same arguments is reused as it is."""
    workload = Workload(directory, count, attachment, send_options, short)
    done = directory / ".complete"
    if done.exists():
        return workload
    directory.mkdir(parents=True, exist_ok=True)
    write_people(workload.csv, count)
    (directory / "body.txt.j2").write_text(TEXT)
    (directory / "body.html.j2").write_text(HTML)
    (directory / "short.txt.j2").write_text(SHORT_TEXT)
    if attachment:
        write_pdf(directory / PDF_NAME, PDF_SIZE)
    workload.mailmerge_template.write_text(_mailmerge_template(attachment))
    done.touch()  # last: an interrupted write is redone next time
    return workload


def write_people(path: Path, count: int) -> None:
    """``count`` distinct recipients; streamed, so a million rows cost no memory."""
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(["email", "name", "code", "city", "plan"])
        for i in range(1, count + 1):
            writer.writerow(
                [
                    f"person{i}@example.org",
                    f"Person {i}",
                    f"M{i:07d}",
                    _CITIES[i % len(_CITIES)],
                    _PLANS[i % len(_PLANS)],
                ]
            )


def write_pdf(path: Path, size: int) -> None:
    """A well-formed PDF of about ``size`` bytes whose stream is incompressible noise, so no
    transfer encoding or compression can make it smaller than a real scanned document."""
    noise = random.Random(42).randbytes(size - 400)
    stream = b"<< /Length %d >>\nstream\n" % len(noise) + noise + b"\nendstream"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R >>",
        stream,
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    path.write_bytes(bytes(out))


def _mailmerge_template(attachment: bool) -> str:
    """The same message in mailmerge's format: one Jinja2 template, headers first, the
    alternative parts written out as MIME (as mailmerge's README shows)."""
    headers = [f"TO: {TO}", f"FROM: {FROM}", f"SUBJECT: {SUBJECT}", "MIME-Version: 1.0"]
    if attachment:
        headers.append(f"ATTACHMENT: {PDF_NAME}")
    headers.append('Content-Type: multipart/alternative; boundary="bench-boundary"')
    parts = [
        "--bench-boundary\nContent-Type: text/plain; charset=us-ascii\n\n" + TEXT,
        "--bench-boundary\nContent-Type: text/html; charset=us-ascii\n\n" + HTML,
        "--bench-boundary--\n",
    ]
    return "\n".join(headers) + "\n\n" + "\n".join(parts)

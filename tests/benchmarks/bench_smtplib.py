"""Baseline: what a careful hand-written script does with the standard library alone.

One reused smtplib session; per recipient, the benchmark's Jinja2 templates rendered and an
``EmailMessage`` built (text, HTML alternative, the attachment) and handed to
``send_message``. No journal, no checks. Run as a child process so that the harness measures
its CPU time and peak RSS:

    python bench_smtplib.py WORKLOAD_DIR HOST PORT [--attachment] [--limit N]

Exit status 0 when every message was accepted; prints the count sent.
"""

from __future__ import annotations

import argparse
import csv
import email.utils
import smtplib
import sys
from email.message import EmailMessage
from pathlib import Path

import jinja2
from workload import FROM, PDF_NAME, SUBJECT, TO


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("directory", type=Path)
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--attachment", action="store_true")
    parser.add_argument("--limit", type=int, default=0, help="only the first N rows (0: all)")
    args = parser.parse_args()
    directory: Path = args.directory
    plain = jinja2.Environment(undefined=jinja2.StrictUndefined)
    html = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=True)
    templates = {
        "from": plain.from_string(FROM),
        "to": plain.from_string(TO),
        "subject": plain.from_string(SUBJECT),
        "text": plain.from_string((directory / "body.txt.j2").read_text()),
        "html": html.from_string((directory / "body.html.j2").read_text()),
    }
    pdf = (directory / PDF_NAME).read_bytes() if args.attachment else None
    sent = 0
    with (
        smtplib.SMTP(args.host, args.port, timeout=60) as smtp,
        (directory / "people.csv").open(newline="", encoding="utf-8") as people,
    ):
        for number, row in enumerate(csv.DictReader(people), start=1):
            if args.limit and number > args.limit:
                break
            message = EmailMessage()
            message["From"] = templates["from"].render(row)
            message["To"] = templates["to"].render(row)
            message["Subject"] = templates["subject"].render(row)
            message["Date"] = email.utils.formatdate(localtime=False)
            message["Message-ID"] = email.utils.make_msgid(domain="example.com")
            message.set_content(templates["text"].render(row))
            message.add_alternative(templates["html"].render(row), subtype="html")
            if pdf is not None:
                message.add_attachment(
                    pdf, maintype="application", subtype="pdf", filename=PDF_NAME
                )
            refused = smtp.send_message(message)  # raises unless someone accepted it
            sent += not refused
    print(sent)
    return 0


if __name__ == "__main__":
    sys.exit(main())

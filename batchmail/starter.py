"""`batchmail init`: a starter campaign that passes `check` and runs on the embedded server."""

from __future__ import annotations

from pathlib import Path

from batchmail.errors import CampaignError, Problem

CAMPAIGN = """\
# A batchmail campaign. Paths are relative to this file.
# Check it:    batchmail check campaign.yaml
# Look at one: batchmail preview campaign.yaml --row 1
# Send it:     batchmail run campaign.yaml
name: starter

# `embedded` delivers to a built-in test server (a Maildir under .batchmail/starter/sink/).
# To go live, replace it with your server:
# smtp:
#   host: smtp.example.com
#   security: starttls            # starttls (port 587) | tls (465) | none (25)
#   username: you@example.com
#   password_env: BATCHMAIL_PASSWORD   # or password_command: "pass show smtp/you"
smtp: embedded

recipients:
  file: recipients.csv
  key: email                      # the column that identifies a recipient across runs

message:
  from: "You <you@example.com>"
  to: "{{ name }} <{{ email }}>"
  subject: "Hello, {{ name }}"
  text: message.txt.j2
  html: message.html.j2
  # cc: ""
  # bcc: ""
  # reply_to: ""
  # attachments:
  #   - files/common.pdf
  #   - "invoices/{{ invoice }}.pdf"
  # headers:
  #   X-Campaign: starter
  # Bulk mail (over 1,000 recipients) needs one-click unsubscribe (RFC 8058);
  # {{ unsubscribe_url }} in the templates shows the link:
  # unsubscribe:
  #   url: "https://example.org/unsubscribe/{{ token }}"   # https:// only
  #   mailto: unsubscribe@example.org                      # optional

send:
  rate: 0                         # messages per second at most; 0 = no limit
  retries: 3                      # further attempts after a temporary failure
"""

RECIPIENTS = """\
email,name
ada@example.org,Ada
grace@example.org,Grace
"""

TEXT = """\
Hello {{ name }},

this message was sent by batchmail.
"""

HTML = """\
<p>Hello {{ name }},</p>
<p>this message was sent by <em>batchmail</em>.</p>
"""

FILES = {
    "campaign.yaml": CAMPAIGN,
    "recipients.csv": RECIPIENTS,
    "message.txt.j2": TEXT,
    "message.html.j2": HTML,
}


def write_starter(directory: Path) -> Path:
    """Write the starter files; refuse to overwrite any existing one."""
    existing = [name for name in FILES if (directory / name).exists()]
    if existing:
        raise CampaignError(
            [Problem(str(directory / name), "already exists; not overwritten") for name in existing]
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in FILES.items():
            (directory / name).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise CampaignError([Problem(str(directory), f"cannot write: {exc.strerror}")]) from exc
    return directory / "campaign.yaml"

"""The SMTP servers the benchmark sends to, each started for one scenario and stopped after it.

- ``smtp_sink``: Postfix's ``smtp-sink``, a fast discarding server that offers PIPELINING but
  (in Debian 12's Postfix 3.7) not CHUNKING;
- ``postfix_smtpd``: a real Postfix ``smtpd`` from a throw-away configuration directory on a
  loopback port, delivering to the ``discard`` transport; it offers PIPELINING and CHUNKING;
- ``aiosmtpd_sink``: the fallback when Postfix is not installed (no PIPELINING, no CHUNKING).

The Postfix servers are the test suite's own (tests/postfix.py). Every server listens on
127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/, for postfix.py

import postfix  # noqa: E402

Server = postfix.PostfixServer
INSTALL_POSTFIX = postfix.INSTALL
HOST = postfix.HOST


def postfix_installed() -> bool:
    return postfix.missing(smtpd=False) is None


def smtp_sink() -> contextlib.AbstractContextManager[Server]:
    """``smtp-sink`` on a free loopback port, discarding every message."""
    return postfix.smtp_sink(keep=False)


def postfix_smtpd() -> contextlib.AbstractContextManager[Server]:
    """A real Postfix (master, smtpd, cleanup, qmgr, discard); needs root."""
    return postfix.postfix_smtpd()


@contextlib.contextmanager
def aiosmtpd_sink() -> Iterator[Server]:
    """aiosmtpd's discarding ``Sink`` handler in a child process (the fallback)."""
    port = postfix.free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "aiosmtpd", "-n", "-l", f"{HOST}:{port}"]
        + ["-c", "aiosmtpd.handlers.Sink"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError):
                keywords = postfix.ehlo_keywords(HOST, port, timeout=1)
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"aiosmtpd did not start on {HOST}:{port}")
            time.sleep(0.05)
        yield Server("aiosmtpd Sink", HOST, port, keywords, lambda: [])
    finally:
        process.terminate()
        process.wait(10)

"""The SMTP servers the benchmark sends to, each started for one scenario and stopped after it.

- ``smtp_sink``: Postfix's ``smtp-sink``, a fast discarding server that offers PIPELINING but
  (in Debian 12's Postfix 3.7) not CHUNKING;
- ``postfix_smtpd``: a real Postfix ``smtpd`` from a throw-away configuration directory on a
  loopback port, delivering to the ``discard`` transport; it offers PIPELINING and CHUNKING;
- ``aiosmtpd_sink``: the fallback when Postfix is not installed (no PIPELINING, no CHUNKING).

Every server listens on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
INSTALL_POSTFIX = (
    "printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d"
    " && apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y postfix"
)
SMTP_SINK = "/usr/sbin/smtp-sink"
POSTFIX = "/usr/sbin/postfix"


@dataclass(frozen=True)
class Server:
    name: str  # what the table calls it, e.g. "smtp-sink"
    host: str
    port: int
    extensions: frozenset[str]  # EHLO keywords, upper case


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def postfix_installed() -> bool:
    return Path(SMTP_SINK).exists() and Path(POSTFIX).exists()


def ehlo_keywords(host: str, port: int, timeout: float = 5.0) -> frozenset[str]:
    """Ask the server what it offers (and so prove it is up and speaking SMTP)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        reader = sock.makefile("rb")
        _read_reply(reader)
        sock.sendall(b"EHLO bench.localhost\r\n")
        lines = _read_reply(reader)
        sock.sendall(b"QUIT\r\n")
    return frozenset(line[4:].split(" ")[0].upper() for line in lines[1:] if line[4:])


def _read_reply(reader: object) -> list[str]:
    lines = []
    while True:
        line = reader.readline().decode("ascii", "replace").rstrip("\r\n")  # type: ignore[attr-defined]
        if not line:
            raise ConnectionError("the server closed the connection")
        lines.append(line)
        if line[3:4] != "-":
            return lines


def wait_until_listening(host: str, port: int, process: subprocess.Popen[bytes] | None) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server on port {port} exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {host}:{port} after 20 s")


@contextlib.contextmanager
def smtp_sink() -> Iterator[Server]:
    """``smtp-sink`` on a free loopback port; it forks nothing and discards every message."""
    port = free_port()
    # -u: required when started as root (it drops to that user after binding the socket).
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    process = subprocess.Popen(
        [SMTP_SINK, *user, f"{HOST}:{port}", "256"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_listening(HOST, port, process)
        yield Server("smtp-sink", HOST, port, ehlo_keywords(HOST, port))
    finally:
        process.terminate()
        process.wait(10)


@contextlib.contextmanager
def aiosmtpd_sink() -> Iterator[Server]:
    """aiosmtpd's discarding ``Sink`` handler in a child process (the fallback)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "aiosmtpd", "-n", "-l", f"{HOST}:{port}"]
        + ["-c", "aiosmtpd.handlers.Sink"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_listening(HOST, port, process)
        yield Server("aiosmtpd Sink", HOST, port, ehlo_keywords(HOST, port))
    finally:
        process.terminate()
        process.wait(10)


# master.cf without chroot (the throw-away queue directory has no chroot jail set up) and
# with only the services a discard-everything smtpd needs.
_MASTER_CF = """\
{host}:{port} inet n - n - - smtpd
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

_MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {directory}/queue
data_directory = {directory}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix-bench.localhost
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
default_transport = discard:benchmark
relay_transport = discard:benchmark
local_transport = discard:benchmark
alias_maps =
alias_database =
biff = no
smtpd_peername_lookup = no
in_flow_delay = 0
smtpd_client_connection_count_limit = 0
smtpd_tls_security_level = none
maillog_file = {directory}/maillog
maillog_file_prefixes = {directory}
"""


@contextlib.contextmanager
def postfix_smtpd() -> Iterator[Server]:
    """A real Postfix (master, smtpd, cleanup, qmgr, discard) from a throw-away configuration.

    Its queue lives on /dev/shm when there is one: Postfix syncs every queue file, and the
    benchmark measures the client, not this machine's disk. Needs root (Postfix drops to its
    ``postfix`` user itself)."""
    if os.geteuid() != 0:
        raise RuntimeError("a Postfix smtpd needs root to start (postfix -c DIR start)")
    port = free_port()
    base = "/dev/shm" if Path("/dev/shm").is_dir() else None
    directory = Path(tempfile.mkdtemp(prefix="batchmail-bench-postfix-", dir=base))
    directory.chmod(0o755)  # postfix's own user must reach the queue below it
    (directory / "master.cf").write_text(_MASTER_CF.format(host=HOST, port=port))
    (directory / "main.cf").write_text(_MAIN_CF.format(directory=directory))
    for sub in ("queue", "data"):
        (directory / sub).mkdir(mode=0o755)  # `postfix start` creates what goes below
    shutil.chown(directory / "data", "postfix")  # the master's lock file goes there
    postfix = [POSTFIX, "-c", str(directory)]
    try:
        subprocess.run([*postfix, "start"], check=True, capture_output=True, timeout=60)
        wait_until_listening(HOST, port, None)
        yield Server("Postfix smtpd", HOST, port, ehlo_keywords(HOST, port))
    except subprocess.CalledProcessError as exc:
        log = directory / "maillog"
        tail = log.read_text()[-2000:] if log.exists() else "(no maillog)"
        raise RuntimeError(
            f"postfix -c {directory} start failed: {exc.stderr.decode()}\n{tail}"
        ) from exc
    finally:
        _stop_postfix(postfix, directory)


def _stop_postfix(postfix: list[str], directory: Path) -> None:
    subprocess.run([*postfix, "stop"], capture_output=True, timeout=60)
    pid_file = directory / "queue" / "pid" / "master.pid"
    with contextlib.suppress(OSError, ValueError):
        pid = int(pid_file.read_text().split()[0])
        for _ in range(100):  # `postfix stop` returns before the master has gone
            os.kill(pid, 0)
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
    shutil.rmtree(directory, ignore_errors=True)

"""Real Postfix servers for tests and benchmarks: ``smtp-sink`` and a throw-away ``smtpd``.

    INSTALL                  the shell line that installs Postfix without starting its daemon
    missing() -> str | None  why these servers cannot run here (a pytest skip reason), or None
    smtp_sink(fault=(), keep=True)
                             context manager -> PostfixServer: Postfix's ``smtp-sink`` test
                             server; it offers PIPELINING, not CHUNKING (Postfix 3.7), and
                             keeps every message in a dump file (``keep=False``: discards
                             them, as the benchmark wants). ``fault``: extra smtp-sink
                             options, e.g. ("-Q", "RCPT") = 421 and close at RCPT
    postfix_smtpd(access={}) context manager -> PostfixServer: Postfix itself (master, smtpd,
                             cleanup, qmgr) from its own configuration directory, delivering
                             to the ``discard`` transport; it offers PIPELINING and CHUNKING.
                             ``access``: recipient -> reply, e.g. {"x@example.org": "550 5.1.1
                             no such user"}, through ``check_recipient_access``
    PostfixServer            .host, .port, .name, .extensions (EHLO keywords, upper case),
                             .message_ids(): the Message-IDs of the messages it took, in order
                             (smtpd: those queued, from its log; smtp-sink: from the dump),
                             .wait_for(count): until it has taken that many

Both listen on 127.0.0.1 only, on a free port, and are stopped, their files removed, when the
context exits. ``postfix_smtpd`` needs root (Postfix drops to its ``postfix`` user itself);
``smtp-sink`` run as root drops to ``nobody``. The queue lives on /dev/shm when there is one:
Postfix syncs each queue file, and a test measures the client, not this machine's disk.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
SMTP_SINK = "/usr/sbin/smtp-sink"
POSTFIX = "/usr/sbin/postfix"
# policy-rc.d exiting 101 keeps the package's own daemon from starting during the install.
INSTALL = (
    "printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d"
    " && apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y postfix"
)
_MESSAGE_ID = re.compile(rb"^Message-ID:\s*(<[^>\r\n]*>)", re.IGNORECASE | re.MULTILINE)


@dataclass
class PostfixServer:
    name: str
    host: str
    port: int
    extensions: frozenset[str]
    _read_ids: Callable[[], list[str]] = field(repr=False)

    def message_ids(self) -> list[str]:
        return self._read_ids()

    def wait_for(self, count: int, timeout: float = 60.0) -> list[str]:
        """The Message-IDs once there are ``count`` of them (the log is written a little
        after the reply); after ``timeout``, whatever there is."""
        deadline = time.monotonic() + timeout
        while len(ids := self.message_ids()) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return ids


def missing(smtpd: bool = True) -> str | None:
    """Why a Postfix server cannot run here, or None when it can."""
    if not Path(SMTP_SINK).exists() or not Path(POSTFIX).exists():
        return f"Postfix is not installed; install it with: {INSTALL}"
    if smtpd and os.geteuid() != 0:
        return "a throw-away Postfix smtpd needs root (postfix -c DIR start)"
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def smtp_sink(fault: Sequence[str] = (), keep: bool = True) -> Iterator[PostfixServer]:
    port = free_port()
    directory = Path(tempfile.mkdtemp(prefix="batchmail-smtp-sink-"))
    directory.chmod(0o777)  # written to by nobody, below
    dump = directory / "dump"
    # -u: required when started as root (it drops to that user after binding the socket).
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    keeping = ["-D", str(dump)] if keep else []
    command = [SMTP_SINK, *user, *keeping, *fault, f"{HOST}:{port}", "256"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_until_listening(port, process)
        read = lambda: _dump_message_ids(dump)  # noqa: E731
        yield PostfixServer("smtp-sink", HOST, port, ehlo_keywords(HOST, port), read)
    finally:
        process.terminate()
        process.wait(10)
        if process.stderr is not None:
            process.stderr.close()
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def postfix_smtpd(access: Mapping[str, str] | None = None) -> Iterator[PostfixServer]:
    reason = missing()
    if reason is not None:
        raise RuntimeError(reason)
    port = free_port()
    base = "/dev/shm" if Path("/dev/shm").is_dir() else None
    directory = Path(tempfile.mkdtemp(prefix="batchmail-postfix-", dir=base))
    directory.chmod(0o755)  # Postfix's own user must reach the queue below it
    (directory / "master.cf").write_text(_MASTER_CF.format(host=HOST, port=port))
    restrictions = f"check_recipient_access {_inline(access)}, " if access else ""
    main_cf = _MAIN_CF.format(directory=directory, restrictions=restrictions)
    (directory / "main.cf").write_text(main_cf)
    for sub in ("queue", "data"):
        (directory / sub).mkdir(mode=0o755)  # `postfix start` creates what goes below
    shutil.chown(directory / "data", "postfix")  # the master's lock file goes there
    postfix = [POSTFIX, "-c", str(directory)]
    try:
        started = subprocess.run([*postfix, "start"], capture_output=True, timeout=60)
        if started.returncode != 0:
            raise RuntimeError(
                f"postfix -c {directory} start failed: {started.stderr.decode()}\n"
                + _tail(directory / "maillog")
            )
        _wait_until_listening(port, None)
        read = lambda: _log_message_ids(directory / "maillog")  # noqa: E731
        yield PostfixServer("Postfix smtpd", HOST, port, ehlo_keywords(HOST, port), read)
    finally:
        _stop_postfix(postfix, directory)


def ehlo_keywords(host: str, port: int, timeout: float = 5.0) -> frozenset[str]:
    """What the server offers (which also proves it is up and speaking SMTP)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        reader = sock.makefile("rb")
        _read_reply(reader)
        sock.sendall(b"EHLO test.localhost\r\n")
        lines = _read_reply(reader)
        sock.sendall(b"QUIT\r\n")
        _read_reply(reader)
    return frozenset(line[4:].split(" ")[0].upper() for line in lines[1:] if line[4:])


# master.cf without chroot (the throw-away queue has no chroot jail) and with only the
# services a discard-everything smtpd needs; postlog writes maillog_file.
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

# in_flow_delay = 0: no pause per message when the queue is busy; without maillog_file in
# maillog_file_prefixes Postfix refuses to start (and says so only in the log).
_MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {directory}/queue
data_directory = {directory}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix-test.localhost
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions = {restrictions}permit_mynetworks, reject
default_transport = discard:test
relay_transport = discard:test
local_transport = discard:test
alias_maps =
alias_database =
biff = no
smtpd_peername_lookup = no
in_flow_delay = 0
smtpd_client_connection_count_limit = 0
smtpd_client_event_limit_exceptions = 127.0.0.0/8
smtpd_tls_security_level = none
maillog_file = {directory}/maillog
maillog_file_prefixes = {directory}
"""


def _inline(access: Mapping[str, str]) -> str:
    entries = ", ".join(f"{{ {address} = {reply} }}" for address, reply in access.items())
    return f"inline:{{ {entries} }}"


def _wait_until_listening(port: int, process: subprocess.Popen[bytes] | None) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            stderr = process.stderr.read().decode() if process.stderr else ""
            raise RuntimeError(f"the server on port {port} exited: {stderr.strip()}")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {HOST}:{port} after 20 s")


def _read_reply(reader: object) -> list[str]:
    lines = []
    while True:
        line = reader.readline().decode("ascii", "replace").rstrip("\r\n")  # type: ignore[attr-defined]
        if not line:
            raise ConnectionError("the server closed the connection")
        lines.append(line)
        if line[3:4] != "-":
            return lines


def _dump_message_ids(dump: Path) -> list[str]:
    try:
        data = dump.read_bytes()
    except FileNotFoundError:
        return []
    return [match.decode() for match in _MESSAGE_ID.findall(data)]


def _log_message_ids(log: Path) -> list[str]:
    """Message-IDs of the messages queued: cleanup logs the ID of every message it reads,
    qmgr only those committed to the queue, each under the queue ID."""
    try:
        text = log.read_text(errors="replace")
    except FileNotFoundError:
        return []
    ids = dict(re.findall(r"cleanup\[\d+\]: (\w+): message-id=(<[^>]*>)", text))
    queued = re.findall(r"qmgr\[\d+\]: (\w+): from=", text)
    return [ids[queue_id] for queue_id in queued if queue_id in ids]


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-2000:] if path.exists() else "(no maillog)"


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

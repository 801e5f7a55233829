"""Run one contender as a child process and measure what a user would see of it.

Wall time from spawn to exit, the CPU time (user + system) of the child and of every process
it started, and the peak resident set size of the largest of them, from ``wait4`` on that
child alone (``RUSAGE_CHILDREN`` would mix in every earlier child). Processes the child
leaves behind to finish on their own (batchmail's build workers and their fork server, which
exit just after it) are adopted by this process (a Linux "child subreaper") and waited for,
so their CPU time counts too.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Measurement:
    wall: float  # seconds
    cpu: float  # seconds, user + system, of the child (and any children it waited for)
    peak_rss_mb: float
    returncode: int
    stderr_tail: str


class ContenderFailed(RuntimeError):
    pass


def run_measured(
    argv: Sequence[str | Path],
    *,
    cwd: Path | None = None,
    timeout: float = 3600,
    env: dict[str, str] | None = None,
    ok_codes: Sequence[int] = (0,),
) -> Measurement:
    """Run ``argv`` to completion (stdout discarded, stderr kept for errors)."""
    _adopt_orphans()
    before = _children()
    start = time.perf_counter()
    with tempfile.TemporaryFile() as err:  # anonymous: nothing left in the working tree
        process = subprocess.Popen(
            [str(arg) for arg in argv],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env={**os.environ, **(env or {})},
        )
        status, usage = _wait(process, start + timeout)
        wall = time.perf_counter() - start
        left_cpu, left_rss = _reap_left_behind(before | {process.pid})
        err.seek(0)
        tail = err.read()[-3000:].decode("utf-8", "replace")
    returncode = os.waitstatus_to_exitcode(status)
    process.returncode = returncode  # wait4 reaped it: tell Popen not to wait again
    measurement = Measurement(
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime + left_cpu,
        peak_rss_mb=max(usage.ru_maxrss, left_rss) / 1024,  # Linux reports KiB
        returncode=returncode,
        stderr_tail=tail,
    )
    if returncode not in ok_codes:
        raise ContenderFailed(f"{argv[0]} ... exited {returncode}:\n{tail}")
    return measurement


def _wait(process: subprocess.Popen[bytes], deadline: float) -> tuple[int, os.struct_rusage]:
    """Block in wait4 (no polling: the parent must not steal CPU from the measured child);
    a timer kills a child that overruns."""
    timer = threading.Timer(max(0.0, deadline - time.perf_counter()), process.kill)
    timer.start()
    try:
        _, status, usage = os.wait4(process.pid, 0)
    finally:
        timer.cancel()
    if time.perf_counter() > deadline:
        raise ContenderFailed(f"timed out and was killed (status {status})")
    return status, usage


_PR_SET_CHILD_SUBREAPER = 36


def _adopt_orphans() -> None:
    """Become the parent of descendants whose own parent exits (Linux 3.4+)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def _children() -> set[int]:
    me = os.getpid()
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == me:
                found.add(int(entry.name))
    return found


def _reap_left_behind(known: set[int], patience: float = 30.0) -> tuple[float, int]:
    """Wait for the processes the measured child left to this one; their CPU seconds and
    largest peak RSS (KiB)."""
    cpu, rss = 0.0, 0
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        orphans = _children() - known
        if not orphans:
            break
        for pid in orphans:
            with contextlib.suppress(ChildProcessError):
                reaped, _, usage = os.wait4(pid, os.WNOHANG)
                if reaped:
                    cpu += usage.ru_utime + usage.ru_stime
                    rss = max(rss, usage.ru_maxrss)
        time.sleep(0.05)
    return cpu, rss

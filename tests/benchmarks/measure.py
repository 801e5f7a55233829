"""Run one contender as a child process and measure what a user would see of it.

Wall time from spawn to exit, the child's own CPU time (user + system) and its peak resident
set size, both from ``wait4`` on that child alone (``RUSAGE_CHILDREN`` would mix in every
earlier child and report the largest RSS of them all).
"""

from __future__ import annotations

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
        err.seek(0)
        tail = err.read()[-3000:].decode("utf-8", "replace")
    returncode = os.waitstatus_to_exitcode(status)
    process.returncode = returncode  # wait4 reaped it: tell Popen not to wait again
    measurement = Measurement(
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime,
        peak_rss_mb=usage.ru_maxrss / 1024,  # Linux reports KiB
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

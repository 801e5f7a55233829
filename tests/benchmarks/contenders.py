"""How each contender is run: batchmail through its CLI, the mailmerge and smtplib baselines,
the raw pipelined sender, and the render pipeline; each as a measured child process.

Also the plumbing they share: the delaying proxy, mailmerge's own virtualenv, and the
optional cProfile of a batchmail run.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from measure import Measurement, run_measured
from workload import Workload

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable  # the interpreter with batchmail installed
MAILMERGE_VERSION = "2.3.0"


def batchmail_run(workload: Workload, port: int, sessions: int = 1) -> Measurement:
    """``batchmail run`` from a fresh journal: every recipient pending."""
    campaign = fresh_campaign(workload, port, sessions)
    return run_measured(
        [PYTHON, "-m", "batchmail", "run", campaign, "--quiet"], cwd=campaign.parent
    )


def batchmail_dry_run(workload: Workload, out: Path) -> Measurement:
    campaign = fresh_campaign(workload, 25, 1)  # the port is never used by a dry run
    try:
        argv = [PYTHON, "-m", "batchmail", "run", campaign, "--dry-run", "--out", out, "--quiet"]
        return run_measured(argv, cwd=campaign.parent)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def render_pipeline(workload: Workload) -> Measurement:
    campaign = fresh_campaign(workload, 25, 1)
    return run_measured([PYTHON, HERE / "bench_render.py", campaign], cwd=campaign.parent)


def fresh_campaign(workload: Workload, port: int, sessions: int) -> Path:
    campaign = workload.write_campaign(port, sessions=sessions)
    shutil.rmtree(workload.directory / ".batchmail", ignore_errors=True)  # journal, lock
    return campaign


def mailmerge(mailmerge_bin: Path, workload: Workload, port: int, limit: int) -> Measurement:
    """mailmerge sends the first ``limit`` rows (all when ``limit`` is the row count);
    it prints every message, to /dev/null here, as it would to a terminal."""
    count = ["--no-limit"] if limit >= workload.count else ["--limit", str(limit)]
    argv = [mailmerge_bin, "--no-dry-run", *count, "--output-format", "raw"]
    argv += ["--template", workload.mailmerge_template, "--database", workload.csv]
    argv += ["--config", workload.mailmerge_config(port)]
    return run_measured(argv, cwd=workload.directory)


def smtplib_baseline(workload: Workload, port: int, limit: int) -> Measurement:
    argv = [PYTHON, HERE / "bench_smtplib.py", workload.directory, "127.0.0.1", str(port)]
    argv += ["--limit", str(limit)] + (["--attachment"] if workload.attachment else [])
    return run_measured(argv, cwd=HERE)


def raw_corpus(workload: Workload) -> Path:
    """Render every message once with batchmail (untimed) for the raw sender."""
    corpus = workload.directory / "raw-corpus"
    if not (corpus / "index.tsv").exists():
        campaign = fresh_campaign(workload, 25, 1)
        run_measured([PYTHON, HERE / "bench_raw.py", "prepare", campaign, corpus], cwd=HERE)
    return corpus


def raw_sender(
    workload: Workload, port: int, mode: str, window: int, sessions: int = 1
) -> Measurement:
    corpus = raw_corpus(workload)
    argv = [PYTHON, HERE / "bench_raw.py", "send", corpus, "127.0.0.1", str(port)]
    argv += ["--mode", mode, "--window", str(window), "--sessions", str(sessions)]
    return run_measured(argv, cwd=HERE)


def profile_batchmail(workload: Workload, port: int, out: Path) -> Path:
    """One more ``batchmail run`` (one session) under cProfile; returns the .prof file."""
    campaign = fresh_campaign(workload, port, 1)
    prof = out.with_suffix(".prof")
    argv = [PYTHON, "-m", "cProfile", "-o", prof, "-m", "batchmail", "run", campaign, "--quiet"]
    run_measured(argv, cwd=campaign.parent)
    return prof


@contextlib.contextmanager
def delaying_proxy(upstream_port: int, rtt: float, directory: Path) -> Iterator[int]:
    """A ``delayproxy.py`` child in front of 127.0.0.1:``upstream_port``; yields its port."""
    port_file = directory / f"proxy-{upstream_port}.port"
    port_file.unlink(missing_ok=True)
    argv = [PYTHON, HERE / "delayproxy.py", "--rtt", str(rtt)]
    argv += ["--upstream", f"127.0.0.1:{upstream_port}", "--port-file", str(port_file)]
    process = subprocess.Popen(argv)
    try:
        deadline = time.monotonic() + 20
        while not (port_file.exists() and port_file.read_text()):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the delaying proxy did not start")
            time.sleep(0.02)
        yield int(port_file.read_text())
    finally:
        process.terminate()
        process.wait(10)


def mailmerge_executable(venv: Path) -> Path:
    """mailmerge in its own virtualenv (never a batchmail dependency), created if missing."""
    executable = venv / "bin" / "mailmerge"
    if not executable.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, f"mailmerge=={MAILMERGE_VERSION}"], check=True)
    return executable

"""Turn results into the Markdown the harness prints: the machine, one table per scenario
(messages/s, CPU, peak RSS, ratio to each baseline), the targets met or missed, and where a
profiled batchmail run spent its time."""

from __future__ import annotations

import platform
import pstats
import subprocess
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from scenarios import Result

BASELINES = ("mailmerge", "smtplib", "raw DATA", "raw BDAT")
_RSS_LIMIT_MB = 100.0
_FLAT_MB = 10.0  # peak RSS may grow this much from the small run to the large one
_DRY_RUN_GROWTH = 1.3  # the dry run's peak RSS at the large count over the small one's


def machine(repo: Path, mailmerge_version: str) -> str:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    commit = _output(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"])
    dirty = _output(["git", "-C", str(repo), "status", "--porcelain", "--", "batchmail"])
    if dirty:
        paths = [line.split()[-1].removeprefix("batchmail/") for line in dirty.splitlines()]
        changed = ", ".join(paths)
        commit += f" plus uncommitted changes to {changed}"
    postfix = _output(["postconf", "-h", "mail_version"]) or "not installed"
    return "\n".join(
        [
            f"- date: {datetime.now(UTC).isoformat(timespec='seconds')}",
            f"- machine: `{' '.join(platform.uname())}`",
            f"- CPU: {cpu}, nproc {_output(['nproc'])}",
            f"- Python {platform.python_version()}; batchmail at commit {commit}; "
            f"Postfix {postfix}; mailmerge {mailmerge_version}",
        ]
    )


def load_note() -> str:
    """The load average now, and a warning when something else is using the CPUs."""
    one, five, fifteen = Path("/proc/loadavg").read_text().split()[:3]
    text = f"Load average before this scenario: {one} {five} {fifteen}."
    if float(one) > 0.5:
        text += (
            " **Other processes were busy: the timings below are inflated and less "
            "reliable; run again on an idle machine.**"
        )
    return text


def _output(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return ""


def table(results: Sequence[Result]) -> str:
    rates = {r.contender: r.rate for r in results if r.rate}
    baselines = [b for b in BASELINES if b in rates]
    head = ["contender", "server", "n", "wall s", "msg/s", "CPU s", "CPU ms/msg", "peak RSS MB"]
    head += [f"x {b}" for b in baselines]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        m = r.measurement
        if m is None:
            cells = [r.contender, r.server, str(r.count), "FAILED"] + [""] * (len(head) - 4)
        else:
            cells = [r.contender, r.server, f"{r.count:,}", f"{m.wall:.2f}", _num(r.rate)]
            cells += [f"{m.cpu:.2f}", f"{1000 * m.cpu / r.count:.3f}", f"{m.peak_rss_mb:.1f}"]
            cells += [_ratio(r.rate, rates[b]) for b in baselines]
        lines.append("| " + " | ".join(cells) + " |")
    errors = [f"- {r.contender} failed: {r.error.strip()[-800:]}" for r in results if r.error]
    return "\n".join(lines + ([""] + errors if errors else []))


def _num(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _ratio(value: float | None, base: float) -> str:
    if value is None:
        return ""
    ratio = value / base
    return f"{ratio:.1f}x" if ratio >= 0.95 else f"{ratio:.2f}x"


def targets(results: Sequence[Result]) -> str:
    """Each target of the issue, with the number from this run."""
    rate = {(r.scenario, r.contender): r.rate for r in results if r.rate}
    rows = []

    def ratio(name: str, scenario: str, a: str, b: str, goal: float) -> None:
        x, y = rate.get((scenario, a)), rate.get((scenario, b))
        if x and y:
            value = x / y
            rows.append((name, f"{value:.1f}x", f">= {goal:g}x", value >= goal))
        else:
            rows.append((name, "not measured", f">= {goal:g}x", None))

    ratio("loopback 2 KB vs mailmerge", "loopback-2k", "batchmail", "mailmerge", 5)
    ratio("loopback 100 KB attachment vs mailmerge", "loopback-100k", "batchmail", "mailmerge", 10)
    two = "batchmail sessions=2"
    ratio("(send.sessions: 2) loopback 2 KB vs mailmerge", "loopback-2k", two, "mailmerge", 5)
    ratio("(send.sessions: 2) loopback 100 KB vs mailmerge", "loopback-100k", two, "mailmerge", 10)
    ratio("50 ms RTT, CHUNKING server vs mailmerge", "rtt-chunking", "batchmail", "mailmerge", 100)
    ratio("50 ms RTT, PIPELINING-only vs mailmerge", "rtt-pipelining", "batchmail", "mailmerge", 5)
    four = "batchmail sessions=4"
    ratio("sessions 4 vs 1, CHUNKING server", "rtt-chunking", four, "batchmail", 3.5)
    ratio("sessions 4 vs 1, PIPELINING-only", "rtt-pipelining", four, "batchmail", 3.5)
    # The most four sessions could give: what the server took from the raw sender's four.
    raw = "(raw sender) sessions 4 vs batchmail's 1"
    ratio(f"{raw}, CHUNKING", "rtt-chunking", "raw BDAT sessions=4", "batchmail", 3.5)
    ratio(f"{raw}, PIPELINING-only", "rtt-pipelining", "raw DATA sessions=4", "batchmail", 3.5)
    rows.extend(_memory_targets([r for r in results if r.scenario == "memory"]))
    rows.extend(_dry_run_targets([r for r in results if r.scenario == "dry-run-memory"]))
    lines = ["| target | this run | goal | met |", "|---|---|---|---|"]
    for name, value, goal, met in rows:
        verdict = "-" if met is None else ("yes" if met else "**no**")
        lines.append(f"| {name} | {value} | {goal} | {verdict} |")
    return "\n".join(lines)


def _memory_targets(results: Sequence[Result]) -> Iterable[tuple[str, str, str, bool | None]]:
    by_contender: dict[str, list[Result]] = {}
    for r in results:
        if r.measurement is not None and not r.contender.startswith("dry-run"):
            by_contender.setdefault(r.contender, []).append(r)
    for contender, runs in by_contender.items():
        if len(runs) < 2:
            continue
        small, large = sorted(runs, key=lambda r: r.count)[:: len(runs) - 1]
        assert small.measurement and large.measurement
        a, b = small.measurement.peak_rss_mb, large.measurement.peak_rss_mb
        yield (
            f"{contender}: peak RSS at {large.count:,}",
            f"{b:.1f} MB",
            f"< {_RSS_LIMIT_MB:g} MB",
            b < _RSS_LIMIT_MB,
        )
        yield (
            f"{contender}: flat from {small.count:,} to {large.count:,}",
            f"{a:.1f} -> {b:.1f} MB",
            f"+ < {_FLAT_MB:g} MB",
            b - a < _FLAT_MB,
        )


def _dry_run_targets(results: Sequence[Result]) -> Iterable[tuple[str, str, str, bool | None]]:
    measured = sorted((r for r in results if r.measurement is not None), key=lambda r: r.count)
    if len(measured) < 2:
        return
    small, large = measured[0], measured[-1]
    assert small.measurement and large.measurement
    a, b = small.measurement.peak_rss_mb, large.measurement.peak_rss_mb
    name = "dry run, short messages"
    yield (
        f"{name}: peak RSS at {large.count:,}",
        f"{b:.1f} MB",
        f"< {_RSS_LIMIT_MB:g} MB",
        b < _RSS_LIMIT_MB,
    )
    yield (
        f"{name}: {small.count:,} to {large.count:,}",
        f"{a:.1f} -> {b:.1f} MB ({b / a:.2f}x)",
        f"<= {_DRY_RUN_GROWTH:g}x",
        b <= _DRY_RUN_GROWTH * a,
    )


def profile_summary(name: str, prof: Path, top: int = 10) -> str:
    """Where the profiled run's time went: by area, batchmail's functions by cumulative time,
    and the functions with most own time. cProfile counts wall time, so waiting for the
    server shows as socket time. A builtin's time (str.join, sqlite3's execute...) goes to
    the areas of the functions that called it."""
    raw = pstats.Stats(str(prof)).stats  # type: ignore[attr-defined]
    by_area: Counter[str] = Counter()
    own: list[tuple[float, str]] = []
    mine: list[tuple[float, str]] = []
    total = 0.0
    for (filename, line, function), (_, _, tottime, cumtime, callers) in raw.items():
        total += tottime
        where = f"{_short(filename)}:{line}({function})"
        own.append((tottime, where))
        if "batchmail/" in filename and not filename.endswith(("__main__.py", "cli.py")):
            mine.append((cumtime, where))
        area = _area(filename, function)
        if area != "other" or filename != "~" or not callers:
            by_area[area] += tottime
            continue
        for (caller_file, _, caller_function), timing in callers.items():
            by_area[_area(caller_file, caller_function)] += timing[2]
    areas = ", ".join(f"{area} {100 * t / total:.0f}%" for area, t in by_area.most_common(9))
    lines = [f"**{name}**: batchmail run under cProfile, one session, {total:.1f} s.", ""]
    lines += [f"By area: {areas}.", "", "batchmail's functions by cumulative time:", ""]
    lines += [f"    {t:7.2f} s  {where}" for t, where in sorted(mine, reverse=True)[:top]]
    lines += ["", "Most own time:", ""]
    lines += [f"    {t:7.2f} s  {where}" for t, where in sorted(own, reverse=True)[:top]]
    return "\n".join(lines)


def _area(filename: str, function: str) -> str:
    text = f"{filename} {function}"
    for marker, area in [
        ("sqlite3", "SQLite journal"),
        ("socket", "socket I/O and waiting for replies"),
        ("select", "socket I/O and waiting for replies"),
        ("/email/", "stdlib email (headers, MIME)"),
        ("jinja2", "Jinja2"),
        ("markupsafe", "Jinja2"),
        ("smtplib", "smtplib"),
        ("batchmail/", "batchmail's own code"),
        ("yaml", "YAML load"),
        ("email_validator", "email-validator"),
        ("csv", "CSV"),
        ("posix.fsync", "fsync"),
        ("fsync", "fsync"),
        ("<frozen", "imports"),
    ]:
        if marker in text:
            return area
    return "other"


def _short(filename: str) -> str:
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename

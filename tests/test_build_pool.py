"""Messages built in worker processes are the ones this process would build, in CSV order,
and problems keep their rows; a worker that dies costs nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from campaign_files import people, write_campaign

from batchmail import build_pool
from batchmail.build_pool import build_all
from batchmail.campaign import load_campaign
from batchmail.check import check_campaign
from batchmail.outcomes import ComposedMessage
from batchmail.recipients import read_recipients

DATE = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)


def campaign_with_bad_rows(tmp_path: Path, count: int, bad: set[int]) -> Path:
    rows = people(count)
    for number in bad:
        rows[number - 1]["email"] = f"broken{number}@@example.org"  # not an address
    html = "<p>Dear {{ name }}, é ü 王 {{ code }}</p>\n" + "x" * 300
    return write_campaign(tmp_path, rows, smtp={"host": "127.0.0.1", "port": 2525}, html=html)


def built(path: Path, **kwargs: int) -> list[tuple[int, object]]:
    campaign = load_campaign(path)
    results = build_all(campaign, read_recipients(campaign.recipients), lambda: DATE, **kwargs)
    return [(recipient.row_number, result) for recipient, result in results]


def test_workers_build_the_same_bytes_in_the_same_order(tmp_path: Path) -> None:
    path = campaign_with_bad_rows(tmp_path, 400, bad={5, 250, 399})
    here = built(path, workers=1)
    pooled = built(path, workers=2, parallel_after=20)
    assert [row for row, _ in pooled] == list(range(1, 401))
    assert pooled == here
    problems = [row for row, result in pooled if isinstance(result, tuple)]
    assert problems == [5, 250, 399]
    assert all(
        isinstance(result, ComposedMessage) for row, result in pooled if row not in {5, 250, 399}
    )


def test_a_check_reports_problems_in_row_order_across_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = campaign_with_bad_rows(tmp_path, 300, bad={3, 150, 290})
    csv = path.parent / "people.csv"
    lines = csv.read_text().splitlines()
    lines[101] += ",an extra field"  # row 101: a CSV problem, found here, not in a worker
    csv.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(build_pool, "CHECK_PARALLEL_AFTER", 10)
    report = check_campaign(load_campaign(path))
    assert report.rows == 300
    wheres = [problem.where for problem in report.problems]
    assert [where.split(",")[1].split()[1] for where in wheres] == ["3", "101", "150", "290"]


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def test_killed_workers_leave_nothing_unbuilt(tmp_path: Path) -> None:
    path = campaign_with_bad_rows(tmp_path, 600, bad={450})
    expected = built(path, workers=1)
    campaign = load_campaign(path)
    results = build_all(
        campaign, read_recipients(campaign.recipients), lambda: DATE, workers=2, parallel_after=5
    )
    got = [next(results) for _ in range(40)]  # the pool is running now
    workers = [worker for server in children(os.getpid()) for worker in children(server)]
    assert workers, "no worker processes found"
    for worker in workers:
        os.kill(worker, signal.SIGKILL)
    got.extend(results)
    assert [(recipient.row_number, result) for recipient, result in got] == expected


KILLED_MID_ANSWER = """
import sys, time
from datetime import UTC, datetime
from batchmail.build_pool import build_all
from batchmail.campaign import load_campaign
from batchmail.recipients import read_recipients
campaign = load_campaign(sys.argv[1])
def build(workers):
    rows = read_recipients(campaign.recipients)
    date = lambda: datetime(2026, 3, 3, 9, 0, tzinfo=UTC)
    return build_all(campaign, rows, date, workers=workers, parallel_after=5)
results = build(2)
got = [next(results) for _ in range(10)]
time.sleep(1)  # the workers build ahead, then wait for us to read
print("pool running", flush=True)
sys.stdin.readline()  # the workers are killed meanwhile
got.extend(results)
same = [(r.row_number, b) for r, b in got] == [(r.row_number, b) for r, b in build(1)]
print(len(got), "same" if same else "different", flush=True)
"""


def test_workers_killed_while_handing_back_results_leave_nothing_unbuilt(
    tmp_path: Path,
) -> None:
    # A chunk's result is about a megabyte (40 KB messages), a pipe holds a few hundred
    # kilobytes, and a chunk takes milliseconds to build: each worker is killed halfway
    # through writing a result. A pipe all workers shared would then hold half a message,
    # and a parent reading it would wait forever.
    html = "<p>{{ name }} " + "y" * 40_000 + "</p>\n"
    path = write_campaign(
        tmp_path, people(600), smtp={"host": "127.0.0.1", "port": 2525}, html=html
    )
    script = subprocess.Popen(
        [sys.executable, "-c", KILLED_MID_ANSWER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert script.stdout is not None and script.stdin is not None
        assert script.stdout.readline() == "pool running\n"
        workers = [worker for helper in children(script.pid) for worker in children(helper)]
        assert workers, "no worker processes found"
        for worker in workers:
            os.kill(worker, signal.SIGKILL)
        output, _ = script.communicate("go\n", timeout=60)
    finally:
        script.kill()
        script.wait()
    assert output == "600 same\n"


HOLD_THE_POOL = """
import sys, time
from datetime import UTC, datetime
from batchmail.build_pool import build_all
from batchmail.campaign import load_campaign
from batchmail.recipients import read_recipients
campaign = load_campaign(sys.argv[1])
results = build_all(campaign, read_recipients(campaign.recipients),
                    lambda: datetime.now(UTC), workers=2, parallel_after=5)
for _ in range(40):
    next(results)
print("pool running", flush=True)
time.sleep(60)
"""


def test_workers_go_when_their_parent_is_killed(tmp_path: Path) -> None:
    path = campaign_with_bad_rows(tmp_path, 2000, bad=set())
    parent = subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_POOL, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None and parent.stdout.readline() == "pool running\n"
        helpers = children(parent.pid)  # the fork server (and multiprocessing's tracker)
        workers = [worker for helper in helpers for worker in children(helper)]
        assert workers, "no worker processes found"
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 60  # a bound for a busy machine: the wait ends when they do
    while time.monotonic() < deadline and any(alive(pid) for pid in helpers + workers):
        time.sleep(0.1)
    assert not [pid for pid in helpers + workers if alive(pid)]


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its parent has not collected it

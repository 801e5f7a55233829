"""`batchmail status x | head`: the reader leaves early, batchmail goes quietly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from campaign_files import people, write_campaign


def test_a_closed_output_pipe_is_not_a_traceback(tmp_path: Path) -> None:
    # 3,000 pending rows, listed with --all, print about 130 KB: more than a pipe holds, so
    # the write must fail.
    campaign = write_campaign(tmp_path, people(3000), smtp={"host": "127.0.0.1", "port": 2525})
    status = subprocess.Popen(
        [sys.executable, "-m", "batchmail", "status", str(campaign), "--all"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert status.stdout is not None and status.stderr is not None
    assert status.stdout.read(100)  # it has started talking; then the reader goes
    status.stdout.close()
    errors = status.stderr.read().decode()
    assert status.wait(60) == 141
    assert "Traceback" not in errors and "BrokenPipe" not in errors, errors

"""Render and compose messages on every core, in CSV order, with bounded lookahead.

Turning a row into bytes is pure Python work and holds the GIL, so threads cannot share it;
worker processes can. The first rows are built here, in this process: a small campaign
never starts a worker. Past ``PARALLEL_AFTER`` rows the rest go to worker processes in
chunks, at most a few chunks ahead of the consumer, so memory does not grow with the file
and a message's Date is never far from the moment it is sent.

Workers start from a fork server (not by forking this process, which may hold threads: the
embedded server, the progress bar) and ignore Ctrl-C, which the parent handles. If a worker
dies, the chunks it held are built here instead: building is pure, so nothing is lost.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import multiprocessing
import os
import select
import signal
import sys
import threading
import time
import types
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime
from typing import TYPE_CHECKING

from batchmail.campaign import Campaign
from batchmail.errors import CampaignError, Problem
from batchmail.outcomes import ComposedMessage
from batchmail.recipients import Recipient
from batchmail.shared_parts import SharedParts, Squeezed, expand, size_of

if TYPE_CHECKING:
    from batchmail.check import MessageFactory

# Rows built here before workers start: a class list or a club never starts one; past it,
# workers (about half a second to start, in parallel with the first rows) pay for themselves.
# Measured on a 1,000-message run at 50 ms RTT: 141 msg/s with 1,000 here, 177 with 200.
PARALLEL_AFTER = 200
# The check before a run has nothing else to do meanwhile, so it starts workers later: a row
# takes about 0.35 ms here, and a check of 1,000 rows took 0.38 s in this process against
# 0.50 s with workers from row 200 (10,000 rows: 2.2 s either way).
CHECK_PARALLEL_AFTER = 1000
CHUNK_BYTES = 1 << 20  # aim for about a megabyte of messages per chunk
MAX_CHUNK = 256
# More would help large messages (the runner takes a batch of several chunks at once at
# 140 KB: with DATA batches of 32, 10,000 such messages to smtp-sink were sent in 22.0 s with
# 8 ahead, 24.1 s with 2), but a worker killed while it hands back a result can leave the
# executor waiting forever (the result pipe holds half a message), and busy workers are more
# often caught so: with 8, tests/test_build_pool.py's killed-workers test hung in 2 runs of
# 6; with 2, in none.
CHUNKS_AHEAD_PER_WORKER = 2

# A row's result: its message (squeezed, when asked for: see shared_parts), or the problems
# that keep it from being one. With ``keep_bytes=False`` (a check) a good row's result is
# None: nothing to carry back.
Built = ComposedMessage | Squeezed | tuple[Problem, ...] | None


def worker_count() -> int:
    """Cores this process may use; 1 means build everything here."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def build_all(
    campaign: Campaign,
    recipients: Iterable[Recipient],
    date: Callable[[], datetime],
    *,
    keep_bytes: bool | Callable[[], bool] = True,
    workers: int | None = None,
    parallel_after: int | None = None,
    squeezed: bool = False,
) -> Iterator[tuple[Recipient, Built]]:
    """Each recipient with its built message (or problems), in the order given.
    ``keep_bytes`` may be a question, asked as rows are handed out: whether their messages
    are still wanted (else a good row's result is None). ``squeezed``: a message with
    shared parts comes as a resolved ``Squeezed`` (else whole); workers hand theirs back
    squeezed either way, to carry less."""
    from batchmail.check import MessageFactory

    if not callable(keep_bytes):
        keep_bytes = functools.partial(bool, keep_bytes)
    factory = MessageFactory.prepare(campaign)
    shared = factory.shared_parts()

    def finished(built: Built) -> Built:
        if isinstance(built, ComposedMessage) and squeezed:
            built = shared.squeeze(built)
        if isinstance(built, Squeezed):
            built = shared.resolve(built)
            return built if squeezed else expand(built)
        return built

    workers = worker_count() if workers is None else workers
    first = PARALLEL_AFTER if parallel_after is None else parallel_after
    rows = iter(recipients)
    for count, recipient in enumerate(rows, 1):
        yield recipient, finished(_build(factory, recipient, date(), keep_bytes()))
        if count >= first and workers > 1:
            break
    else:
        return
    following = next(rows, None)
    if following is None:
        return  # exactly PARALLEL_AFTER rows: no worker needed after all
    rest = itertools.chain([following], rows)
    for recipient, built in _Pool(campaign, factory, workers, keep_bytes).build(rest, date):
        yield recipient, finished(built)


def _build(
    factory: MessageFactory, recipient: Recipient, date: datetime, keep_bytes: bool
) -> Built:
    try:
        message = factory.build(recipient, date)
    except CampaignError as exc:
        return exc.problems
    return message if keep_bytes else None


class _Pool:
    def __init__(
        self,
        campaign: Campaign,
        factory: MessageFactory,
        workers: int,
        keep_bytes: Callable[[], bool],
    ) -> None:
        self._campaign = campaign
        self._factory = factory  # for chunks a dead worker left behind
        self._workers = workers
        self._keep_bytes = keep_bytes
        self._chunk = 16  # grows to about CHUNK_BYTES once a message's size is known

    def build(
        self, rows: Iterator[Recipient], date: Callable[[], datetime]
    ) -> Iterator[tuple[Recipient, Built]]:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["batchmail.build_pool", "batchmail.check"])
        pending: deque[tuple[list[Recipient], Future[list[Built]] | None, bool]] = deque()
        executor = ProcessPoolExecutor(
            self._workers,
            context,
            initializer=_start_worker,
            initargs=(self._campaign, os.getpid()),
        )
        broken = False
        try:
            while True:
                while len(pending) < self._workers * CHUNKS_AHEAD_PER_WORKER:
                    chunk = _take(rows, self._chunk)
                    if not chunk:
                        break
                    future = None
                    keep_bytes = self._keep_bytes()
                    if not broken:
                        try:
                            with _main_script_hidden():
                                future = executor.submit(_build_chunk, chunk, date(), keep_bytes)
                        except BrokenProcessPool:
                            broken = True
                    pending.append((chunk, future, keep_bytes))
                if not pending:
                    return
                chunk, future, keep_bytes = pending.popleft()
                results = None
                if future is not None:
                    try:
                        results = future.result()
                    except BrokenProcessPool:
                        broken = True
                if results is None:
                    results = [_build(self._factory, r, date(), keep_bytes) for r in chunk]
                self._resize(results, keep_bytes)
                yield from zip(chunk, results, strict=True)
        finally:
            executor.shutdown(wait=False, cancel_futures=True)

    def _resize(self, results: list[Built], keep_bytes: bool) -> None:
        sizes = [size_of(r) for r in results if isinstance(r, ComposedMessage | Squeezed)]
        if sizes:
            average = max(1, sum(sizes) // len(sizes))
            self._chunk = max(1, min(MAX_CHUNK, CHUNK_BYTES // average))
        elif not keep_bytes:
            self._chunk = MAX_CHUNK  # a check carries nothing back


@contextlib.contextmanager
def _main_script_hidden() -> Iterator[None]:
    """multiprocessing makes a new worker import the parent's main script again (its rule for
    spawned processes). The workers need nothing from it, and a library user's script without
    an ``if __name__ == "__main__"`` guard would run again in each of them: while workers
    start (they start on submit), the main module is a stand-in with no file."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def _take(rows: Iterator[Recipient], count: int) -> list[Recipient]:
    chunk = []
    for recipient in rows:
        chunk.append(recipient)
        if len(chunk) >= count:
            break
    return chunk


# --- in the worker process ------------------------------------------------------------------

_worker_factory: MessageFactory | None = None
_worker_shared: SharedParts | None = None


def _start_worker(campaign: Campaign, parent: int) -> None:
    global _worker_factory, _worker_shared
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()
    from batchmail.check import MessageFactory

    _worker_factory = MessageFactory.prepare(campaign)
    _worker_shared = _worker_factory.shared_parts()


def _exit_with(parent: int) -> None:
    """Exit when the parent does. A worker waits on its task queue, whose write end every
    worker holds too, so a parent killed by SIGKILL would leave it (and the fork server)
    waiting forever."""
    try:
        handle = os.pidfd_open(parent)
    except (AttributeError, OSError):  # no pidfd here, or the parent is gone already
        while _alive(parent):
            time.sleep(1)
    else:
        select.select([handle], [], [])  # readable once the parent has exited
    os._exit(0)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process now has that number
        return False
    return True


def _build_chunk(chunk: list[Recipient], date: datetime, keep_bytes: bool) -> list[Built]:
    """The chunk's results, messages squeezed: the shared parts stay here (the parent has
    its own copy of them)."""
    assert _worker_factory is not None and _worker_shared is not None
    results = [_build(_worker_factory, recipient, date, keep_bytes) for recipient in chunk]
    return [_worker_shared.squeeze(r) if isinstance(r, ComposedMessage) else r for r in results]

"""Render and compose messages on every core, in CSV order, with bounded lookahead.

Turning a row into bytes is pure Python work and holds the GIL, so threads cannot share it;
worker processes can. The first rows are built here, in this process: a small campaign
never starts a worker. Past ``PARALLEL_AFTER`` rows the rest go to worker processes in
chunks, at most a few chunks ahead of the consumer, so memory does not grow with the file
and a message's Date is never far from the moment it is sent.

Workers start from a fork server (not by forking this process, which may hold threads: the
embedded server, the progress bar) and ignore Ctrl-C, which the parent handles. Each has a
pipe of its own (see _Worker). If a worker dies, the workers are stopped and the chunks they
held are built here instead: building is pure, so nothing is lost.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import multiprocessing
import multiprocessing.connection
import os
import queue
import signal
import sys
import threading
import types
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
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
# Chunks asked of each worker ahead of the one being consumed (their results wait in the
# worker until read).
CHUNKS_AHEAD_PER_WORKER = 2

# A row's result: its message (squeezed, when asked for: see shared_parts), or the problems
# that keep it from being one. With ``keep_bytes=False`` (a check) a good row's result is
# the message's size in bytes: nothing more to carry back.
Built = ComposedMessage | Squeezed | tuple[Problem, ...] | int


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
    are still wanted (else a good row's result is its message's size). ``squeezed``: a
    message with shared parts comes as a resolved ``Squeezed`` (else whole); workers hand
    theirs back squeezed either way, to carry less."""
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
    return message if keep_bytes else message.size


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
        # (the chunk, the worker building it or None to build it here, keep_bytes)
        pending: deque[tuple[list[Recipient], _Worker | None, bool]] = deque()
        workers = _start_workers(self._campaign, self._workers)
        turn = itertools.cycle(workers)
        try:
            while True:
                while len(pending) < self._workers * CHUNKS_AHEAD_PER_WORKER:
                    chunk = _take(rows, self._chunk)
                    if not chunk:
                        break
                    keep_bytes = self._keep_bytes()
                    worker = next(turn) if workers else None
                    if worker is not None and not worker.ask(chunk, date(), keep_bytes):
                        worker = None
                        _stop_workers(workers)  # one died: the rest is built here
                    pending.append((chunk, worker, keep_bytes))
                if not pending:
                    return
                chunk, worker, keep_bytes = pending.popleft()
                results = worker.answer() if worker is not None and workers else None
                if results is None:
                    _stop_workers(workers)  # one died (if any were left): the rest is built here
                    results = [_build(self._factory, r, date(), keep_bytes) for r in chunk]
                self._resize(results, keep_bytes)
                yield from zip(chunk, results, strict=True)
        finally:
            _stop_workers(workers)

    def _resize(self, results: list[Built], keep_bytes: bool) -> None:
        sizes = [size_of(r) for r in results if isinstance(r, ComposedMessage | Squeezed)]
        if sizes:
            average = max(1, sum(sizes) // len(sizes))
            self._chunk = max(1, min(MAX_CHUNK, CHUNK_BYTES // average))
        elif not keep_bytes:
            self._chunk = MAX_CHUNK  # a check carries nothing back


class _Worker:
    """A worker process and its own pipe, which only it and this process hold: a worker
    that dies, even halfway through handing back a result, leaves the end of the stream
    there, never half a message to wait on forever (as a pipe all workers share would)."""

    def __init__(self, process: BaseProcess, connection: Connection) -> None:
        self.process = process
        self._connection = connection

    def ask(self, chunk: list[Recipient], date: datetime, keep_bytes: bool) -> bool:
        """Hand it a chunk to build; False if it is gone. It reads what it is asked as it
        comes (see _serve), so this never waits for it to finish a chunk."""
        try:
            self._connection.send((chunk, date, keep_bytes))
        except (OSError, EOFError):
            return False
        return True

    def answer(self) -> list[Built] | None:
        """The results of the oldest chunk it was asked for, or None if it died first.
        An exception raised in the worker is raised here."""
        connection, sentinel = self._connection, self.process.sentinel
        try:
            ready = multiprocessing.connection.wait([connection, sentinel])
            if connection not in ready:
                return None  # exited, nothing more written
            done, value = connection.recv()
        except (OSError, EOFError):
            return None  # died while writing it
        if not done:
            raise value
        return value

    def stop(self) -> None:
        self._connection.close()  # it exits at the end of its stream
        if self.process.is_alive():
            self.process.terminate()  # mid-chunk: nothing of it is wanted any more


def _start_workers(campaign: Campaign, count: int) -> list[_Worker]:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["batchmail.build_pool", "batchmail.check"])
    workers = []
    with _main_script_hidden():
        for _ in range(count):
            ours, theirs = context.Pipe()
            process = context.Process(target=_serve, args=(theirs, campaign), daemon=True)
            try:
                process.start()
            except OSError:
                ours.close()
                break  # no more processes to be had: build with those there are
            finally:
                theirs.close()  # the worker's copy is the only one left
            workers.append(_Worker(process, ours))
    return workers


def _stop_workers(workers: list[_Worker]) -> None:
    """Stop them all and empty the list: nothing more is asked of them."""
    for worker in workers:
        worker.stop()
    for worker in workers:
        worker.process.join(timeout=5)
    workers.clear()


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


def _serve(connection: Connection, campaign: Campaign) -> None:
    """Build the chunks asked for, in order, until the parent closes its end (or exits,
    killed or not: the kernel closes it then)."""
    global _worker_factory, _worker_shared
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    # Asked for more while it writes a result, the parent could wait on us as we wait on
    # it (both pipes full): a thread takes every request off the pipe as it comes. Another
    # writes the results, so the next chunk is built while the parent has yet to read one.
    asked: queue.SimpleQueue[tuple[list[Recipient], datetime, bool]] = queue.SimpleQueue()
    answers: queue.SimpleQueue[tuple[bool, object]] = queue.SimpleQueue()
    threading.Thread(target=_receive, args=(connection, asked), daemon=True).start()
    threading.Thread(target=_answer, args=(connection, answers), daemon=True).start()
    from batchmail.check import MessageFactory

    _worker_factory = MessageFactory.prepare(campaign)
    _worker_shared = _worker_factory.shared_parts()
    while True:
        chunk, date, keep_bytes = asked.get()
        try:
            answers.put((True, _build_chunk(chunk, date, keep_bytes)))
        except Exception as exc:  # noqa: BLE001 - raised again in the parent
            answers.put((False, exc))


def _receive(
    connection: Connection, asked: queue.SimpleQueue[tuple[list[Recipient], datetime, bool]]
) -> None:
    try:
        while True:
            asked.put(connection.recv())
    except (OSError, EOFError):
        os._exit(0)  # the parent closed its end, or exited: nothing more is wanted


def _answer(connection: Connection, answers: queue.SimpleQueue[tuple[bool, object]]) -> None:
    try:
        while True:
            connection.send(answers.get())
    except OSError:
        os._exit(0)  # the parent is gone


def _build_chunk(chunk: list[Recipient], date: datetime, keep_bytes: bool) -> list[Built]:
    """The chunk's results, messages squeezed: the shared parts stay here (the parent has
    its own copy of them)."""
    assert _worker_factory is not None and _worker_shared is not None
    results = [_build(_worker_factory, recipient, date, keep_bytes) for recipient in chunk]
    return [_worker_shared.squeeze(r) if isinstance(r, ComposedMessage) else r for r in results]

"""A TCP proxy on 127.0.0.1 that adds a round-trip time, to emulate a distant SMTP server.

Every chunk read from one side is written to the other side half an RTT later (in order, with
no bandwidth limit), so a request and its reply cost one RTT; a new connection costs the TCP
handshake (1.5 RTT until the server accepts) before its greeting starts its half-RTT trip,
as on a real network. No root, no traffic control: plain asyncio. Runs as its own process
so that its CPU time is not charged to the client being measured:

    python delayproxy.py --rtt 0.05 --upstream 127.0.0.1:2525 --port-file FILE
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from pathlib import Path

_EOF = b""


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy reader to writer, each chunk ``delay`` seconds after it was read."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def read() -> None:
        while True:
            data = await reader.read(1 << 16)
            queue.put_nowait((loop.time() + delay, data))
            if not data:
                return

    async def write() -> None:
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if data == _EOF:
                with contextlib.suppress(OSError):
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(read())
            tasks.create_task(write())
    except* OSError:
        pass  # a side went away: closing both ends (in _serve_one) ends the connection


async def _serve_one(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    upstream: tuple[str, int],
    rtt: float,
) -> None:
    # The client's connect() returned at once (loopback). Over a real network the server
    # accepts when the handshake's last ACK reaches it, 1.5 RTT after the SYN left, and its
    # greeting arrives half an RTT later: 2 RTT in all, the last half added by the pump.
    await asyncio.sleep(1.5 * rtt)
    try:
        server_reader, server_writer = await asyncio.open_connection(*upstream)
    except OSError:
        client_writer.close()
        return
    try:
        await asyncio.gather(
            _pump(client_reader, server_writer, rtt / 2),
            _pump(server_reader, client_writer, rtt / 2),
        )
    finally:
        for writer in (client_writer, server_writer):
            writer.close()


async def serve(upstream: tuple[str, int], rtt: float, port_file: Path) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Cancelled when the proxy stops: the connection just ends, nothing to report.
        with contextlib.suppress(asyncio.CancelledError):
            await _serve_one(reader, writer, upstream, rtt)

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=512)
    port = server.sockets[0].getsockname()[1]
    port_file.write_text(str(port))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rtt", type=float, required=True, help="round-trip time in seconds")
    parser.add_argument("--upstream", required=True, help="HOST:PORT of the real server")
    parser.add_argument("--port-file", type=Path, required=True, help="where to write our port")
    args = parser.parse_args()
    host, _, port = args.upstream.rpartition(":")
    asyncio.run(serve((host, int(port)), args.rtt, args.port_file))


if __name__ == "__main__":
    main()

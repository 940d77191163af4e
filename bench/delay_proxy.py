"""A TCP proxy that adds a fixed round-trip time, for kernels without netem.

``python bench/delay_proxy.py --listen 127.0.0.1:8080 --upstream 127.0.0.1:8081 --rtt-ms 20``

Every byte is held for RTT/2 in each direction: what arrives from one side at time t leaves for the other
at t + RTT/2, so a request and its answer cost one RTT, like a link with that delay. A new connection's
first bytes to the server are held until 1.5 RTT after the accept, the cost of the TCP handshake on a real
link (the client's connect() itself returns at once here).

The bytes never enter Python: each direction has its own pipes, filled with `splice(2)` from the source
socket and drained with `splice(2)` into the destination once each chunk's time has come, so the proxy is
cheap on CPU. The pipes (at most 4 x 1 MiB) bound the bytes in flight per direction, like a TCP window:
one connection moves at most 4 MiB per RTT/2 (400 MB/s at 20 ms). TCP slow start is not emulated.

It serves until SIGTERM/SIGINT. "ready <port>" goes to stdout once it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import errno
import fcntl
import os
import signal
import socket
import sys

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
SPLICE_FLAGS = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
CHUNK = 1 << 20
PIPE_SIZE = 1 << 20  # /proc/sys/fs/pipe-max-size: the most an unprivileged pipe may hold
MAX_PIPES = 4  # per direction: at most 4 MiB in flight (a "window")


class _Pipe:
    def __init__(self) -> None:
        self.r, self.w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            self.capacity = int(fcntl.fcntl(self.w, F_SETPIPE_SZ, PIPE_SIZE))
        except OSError:  # over the per-user pipe budget: keep the default size
            self.capacity = 64 << 10
        self.used = 0

    def close(self) -> None:
        for fd in (self.r, self.w):
            with contextlib.suppress(OSError):
                os.close(fd)


class Pump:
    """One direction of one connection: src socket → pipes → (after the delay) → dst socket.

    The bytes wait in a ring of pipes (one pipe holds at most 1 MiB without privileges), filled in order
    and drained in order, so the byte order is kept; a second pipe is only made when the first is full.
    """

    def __init__(
        self,
        conn: Connection,
        src: socket.socket,
        dst: socket.socket,
        delay: float,
        not_before: float,
    ) -> None:
        self.conn = conn
        self.loop = conn.loop
        self.src = src.fileno()
        self.dst = dst.fileno()
        self.dst_sock = dst
        self.delay = delay
        self.not_before = not_before
        self.pipes: list[_Pipe] = [_Pipe()]
        self.fill = 0  # index of the pipe being filled
        # (due, bytes, pipe index); bytes 0 = EOF
        self.queue: collections.deque[tuple[float, int, int]] = collections.deque()
        self.reading = False
        self.writing = False
        self.timer: asyncio.TimerHandle | None = None
        self.eof = False  # the source said EOF: never read from it again
        self.done = False  # EOF passed on (or the connection closed)

    def start(self) -> None:
        self._resume_reading()

    def _resume_reading(self) -> None:
        if not self.reading and not self.done and not self.eof:
            self.loop.add_reader(self.src, self._on_readable)
            self.reading = True

    def _pause_reading(self) -> None:
        if self.reading:
            self.loop.remove_reader(self.src)
            self.reading = False

    def _next_pipe(self) -> bool:
        """Move filling on to the next pipe of the ring, if it is empty (making it if needed)."""
        following = (self.fill + 1) % MAX_PIPES
        if following >= len(self.pipes):
            self.pipes.append(_Pipe())
        if self.pipes[following].used:
            return False
        self.fill = following
        return True

    def _on_readable(self) -> None:
        pipe = self.pipes[self.fill]
        try:
            n = os.splice(self.src, pipe.w, CHUNK, flags=SPLICE_FLAGS)
        except BlockingIOError:
            if pipe.used > 0 and not self._next_pipe():
                self._pause_reading()  # every pipe is full: wait until some of it is sent
            return
        except OSError:
            self.conn.abort()
            return
        now = self.loop.time()
        due = max(now + self.delay, self.not_before)
        if n == 0:
            self._pause_reading()
            self.eof = True
            self.queue.append((due, 0, self.fill))
        else:
            pipe.used += n
            self.queue.append((due, n, self.fill))
            if pipe.used >= pipe.capacity and not self._next_pipe():
                self._pause_reading()
        self._schedule()

    def _schedule(self) -> None:
        if self.timer is not None or self.writing or not self.queue:
            return
        due = self.queue[0][0]
        if due <= self.loop.time():
            self._send()
        else:
            self.timer = self.loop.call_at(due, self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        self._send()

    def _on_writable(self) -> None:
        self.loop.remove_writer(self.dst)
        self.writing = False
        self._send()

    def _send(self) -> None:
        now = self.loop.time()
        while self.queue and self.queue[0][0] <= now:
            due, n, index = self.queue[0]
            if n == 0:
                self.queue.popleft()
                with contextlib.suppress(OSError):
                    self.dst_sock.shutdown(socket.SHUT_WR)
                self.done = True
                self.conn.pump_done()
                return
            pipe = self.pipes[index]
            try:
                sent = os.splice(pipe.r, self.dst, n, flags=SPLICE_FLAGS)
            except BlockingIOError:
                self.loop.add_writer(self.dst, self._on_writable)
                self.writing = True
                return
            except OSError:
                self.conn.abort()
                return
            if sent <= 0:
                self.conn.abort()
                return
            pipe.used -= sent
            if sent < n:
                self.queue[0] = (due, n - sent, index)
            else:
                self.queue.popleft()
            self._resume_reading()
        self._schedule()

    def close(self) -> None:
        self.done = True
        self._pause_reading()
        if self.writing:
            self.loop.remove_writer(self.dst)
            self.writing = False
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        for pipe in self.pipes:
            pipe.close()


class Connection:
    def __init__(self, loop: asyncio.AbstractEventLoop, client: socket.socket, rtt: float) -> None:
        self.loop = loop
        self.client = client
        self.rtt = rtt
        self.upstream: socket.socket | None = None
        self.pumps: list[Pump] = []
        self.closed = False

    async def run(self, upstream_addr: tuple[str, int]) -> None:
        accepted = self.loop.time()
        upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        upstream.setblocking(False)
        self.upstream = upstream
        try:
            await self.loop.sock_connect(upstream, upstream_addr)
        except OSError:
            self.abort()
            return
        for sock in (self.client, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        half = self.rtt / 2
        self.pumps = [
            Pump(self, self.client, upstream, half, accepted + 1.5 * self.rtt),
            Pump(self, upstream, self.client, half, 0.0),
        ]
        for pump in self.pumps:
            pump.start()

    def pump_done(self) -> None:
        if all(p.done for p in self.pumps):
            self.close()

    def abort(self) -> None:
        for sock in (self.client, self.upstream):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for pump in self.pumps:
            pump.close()
        for sock in (self.client, self.upstream):
            if sock is not None:
                sock.close()


async def serve(listen: tuple[str, int], upstream: tuple[str, int], rtt: float) -> None:
    loop = asyncio.get_running_loop()
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(listen)
    server.listen(512)
    server.setblocking(False)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"ready {server.getsockname()[1]}", flush=True)
    tasks: set[asyncio.Task[None]] = set()

    async def accept_loop() -> None:
        while True:
            try:
                client, _addr = await loop.sock_accept(server)
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    await asyncio.sleep(0.05)
                    continue
                raise
            client.setblocking(False)
            task = loop.create_task(Connection(loop, client, rtt).run(upstream))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    acceptor = loop.create_task(accept_loop())
    await stop.wait()
    acceptor.cancel()
    server.close()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--listen", type=_address, required=True, help="HOST:PORT to accept on")
    parser.add_argument("--upstream", type=_address, required=True, help="HOST:PORT of the server")
    parser.add_argument("--rtt-ms", type=float, default=20.0, help="round-trip time to add (default 20)")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.listen, args.upstream, args.rtt_ms / 1000.0))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A measuring SMTP relay for throughput benchmarks: a slow remote relay, observed from its side.

Speaks the same minimal SMTP as bench/fast_sink.py (EHLO with PIPELINING, MAIL,
RCPT, DATA, RSET, NOOP, QUIT) and answers after a configurable latency: the
reply to the end of a message after ``latency`` seconds, every other reply
after ``command_latency``. Replies leave in order, as a server that works
through pipelined commands one at a time sends them.

What it records, on its own clock (time.perf_counter in this process):

- for each accepted mail, when its MAIL FROM arrived and its sender address.
  Each service sends with its own from_email, so the sender names the service:
  per-service rate and the gaps between one service's sends come from these;
- connections open at once, per service and overall. A connection belongs to
  the service whose address its first MAIL FROM names; the peak of each is kept.

Figures are read as JSON over a control port (one line: ``stats``, ``stats
times`` for the MAIL FROM times too, or ``reset``), or in-process with
``Relay.stats()``, and are written to ``--stats-file`` at exit.

    python bench/relay.py [--latency-ms 50] [--command-latency-ms 0] [--stats-file PATH]

prints ``<smtp port> <control port>`` on its first line.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import signal
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

END_OF_DATA = b"\r\n.\r\n"


@dataclass
class ServiceTally:
    """What the relay saw of one sender address."""

    mail_from: list[float] = field(default_factory=list)  # perf_counter of each accepted mail's MAIL FROM
    bytes: int = 0
    open: int = 0  # connections attributed to this sender, open now
    peak: int = 0
    connections: int = 0  # connections attributed to this sender, ever


class RelayState:
    """Everything the relay counts; touched only from its event loop's thread."""

    def __init__(self, latency: float, command_latency: float) -> None:
        self.latency = latency
        self.command_latency = command_latency
        self.perf0 = time.perf_counter()
        self.wall0 = time.time()
        self.services: dict[str, ServiceTally] = {}
        self.open = 0
        self.peak = 0
        self.opened = 0
        self.first_mail_from: float | None = None
        self.last_reply: float | None = None

    def tally(self, sender: str) -> ServiceTally:
        found = self.services.get(sender)
        if found is None:
            found = self.services[sender] = ServiceTally()
        return found

    def connection_opened(self) -> None:
        self.open += 1
        self.opened += 1
        self.peak = max(self.peak, self.open)

    def connection_closed(self, sender: str | None) -> None:
        self.open -= 1
        if sender is not None:
            self.services[sender].open -= 1

    def attribute(self, sender: str) -> None:
        """A connection's first MAIL FROM: from now on it counts as one of this sender's."""
        tally = self.tally(sender)
        tally.open += 1
        tally.connections += 1
        tally.peak = max(tally.peak, tally.open)

    def accepted(self, sender: str, mail_from_at: float, size: int) -> None:
        tally = self.tally(sender)
        tally.mail_from.append(mail_from_at)
        tally.bytes += size
        if self.first_mail_from is None or mail_from_at < self.first_mail_from:
            self.first_mail_from = mail_from_at

    def reset(self) -> None:
        """Forget the mails and peaks so far; connections still open keep counting."""
        for tally in self.services.values():
            tally.mail_from, tally.bytes = [], 0
            tally.peak = tally.connections = tally.open
        self.peak = self.opened = self.open
        self.first_mail_from = self.last_reply = None

    def stats(self, *, times: bool = False) -> dict[str, Any]:
        """The figures as plain data; times in seconds since the relay started (``clock`` maps them to wall time)."""

        def rel(t: float | None) -> float | None:
            return None if t is None else round(t - self.perf0, 6)

        services = {}
        for sender, tally in sorted(self.services.items()):
            arrivals = sorted(tally.mail_from)
            gaps = [b - a for a, b in itertools.pairwise(arrivals)]
            span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else 0.0
            entry = {
                "accepted": len(arrivals),
                "bytes": tally.bytes,
                "connections": tally.connections,
                "open": tally.open,
                "peak_connections": tally.peak,
                "first_mail_from": rel(arrivals[0] if arrivals else None),
                "last_mail_from": rel(arrivals[-1] if arrivals else None),
                # Mails per second between this sender's first and last MAIL FROM.
                "rate_per_s": (len(arrivals) - 1) / span if span > 0 else None,
                "min_gap_ms": min(gaps) * 1000 if gaps else None,
            }
            if times:
                entry["mail_from"] = [rel(t) for t in arrivals]
            services[sender] = entry
        accepted = sum(s["accepted"] for s in services.values())
        span = None
        if self.first_mail_from is not None and self.last_reply is not None:
            span = self.last_reply - self.first_mail_from
        return {
            "latency_ms": self.latency * 1000,
            "command_latency_ms": self.command_latency * 1000,
            "clock": {"perf_counter": self.perf0, "wall": self.wall0},
            "accepted": accepted,
            "bytes": sum(s["bytes"] for s in services.values()),
            "connections": {"opened": self.opened, "open": self.open, "peak": self.peak},
            "first_mail_from": rel(self.first_mail_from),
            "last_reply": rel(self.last_reply),
            # Accepted mails per second from the first MAIL FROM to the last reply to a message.
            "mails_per_s": accepted / span if span else None,
            "services": services,
        }


class RelayProtocol(asyncio.Protocol):
    def __init__(self, state: RelayState) -> None:
        self.state = state
        self.buffer = b""
        self.in_data = False
        self.search_from = 0
        self.sender: str | None = None  # the service this connection belongs to
        self.transaction: tuple[str, float] | None = None  # MAIL FROM's sender and arrival
        self.replies: deque[tuple[float, bytes, bool, bool]] = deque()  # due, reply, ends a message, then close
        self.last_due = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.loop = asyncio.get_running_loop()
        self.state.connection_opened()
        transport.write(b"220 measuring-relay ESMTP\r\n")

    def connection_lost(self, exc) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.replies.clear()
        self.state.connection_closed(self.sender)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.buffer:
            if self.in_data:
                end = self.buffer.find(END_OF_DATA, self.search_from)
                if end < 0:
                    self.search_from = max(0, len(self.buffer) - len(END_OF_DATA))
                    return
                size = end + 2
                self.buffer = self.buffer[end + len(END_OF_DATA) :]
                self.in_data = False
                self._message_received(size)
                continue
            end = self.buffer.find(b"\r\n")
            if end < 0:
                return
            line, self.buffer = self.buffer[:end], self.buffer[end + 2 :]
            self._command(line)

    def _command(self, line: bytes) -> None:
        verb = line[:4].upper()
        if verb == b"MAIL":
            sender = _address(line)
            if self.sender is None:
                self.sender = sender
                self.state.attribute(sender)
            self.transaction = (sender, time.perf_counter())
            self._reply(b"250 OK\r\n")
        elif verb == b"DATA":
            self.in_data = True
            self.search_from = 0
            # An empty message arrives as ".\r\n" right after DATA.
            self.buffer = b"\r\n" + self.buffer if self.buffer.startswith(b".\r\n") else self.buffer
            self._reply(b"354 End data with <CR><LF>.<CR><LF>\r\n")
        elif verb == b"EHLO":
            self._reply(b"250-measuring-relay\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
        elif verb == b"RSET":
            self.transaction = None
            self._reply(b"250 OK\r\n")
        elif verb == b"QUIT":
            self._reply(b"221 Bye\r\n", close=True)
        else:
            self._reply(b"250 OK\r\n")

    def _message_received(self, size: int) -> None:
        if self.transaction is None:
            self._reply(b"503 5.5.1 No transaction\r\n", delay=self.state.latency)
            return
        sender, started = self.transaction
        self.transaction = None
        self.state.accepted(sender, started, size)
        self._reply(b"250 2.0.0 OK queued\r\n", delay=self.state.latency, ends_message=True)

    def _reply(self, reply: bytes, *, delay: float | None = None, ends_message: bool = False, close=False) -> None:
        if delay is None:
            delay = self.state.command_latency
        now = self.loop.time()
        if not delay and not self.replies:
            self._write(reply, ends_message, close)
            return
        # Worked through one at a time: each reply is due its latency after the previous one.
        due = max(now, self.last_due) + delay
        self.last_due = due
        self.replies.append((due, reply, ends_message, close))
        if self.timer is None:
            self.timer = self.loop.call_at(due, self._flush)

    def _flush(self) -> None:
        self.timer = None
        now = self.loop.time()
        while self.replies and self.replies[0][0] <= now:
            _, reply, ends_message, close = self.replies.popleft()
            self._write(reply, ends_message, close)
        if self.replies:
            self.timer = self.loop.call_at(self.replies[0][0], self._flush)

    def _write(self, reply: bytes, ends_message: bool, close: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(reply)
        if ends_message:
            self.state.last_reply = time.perf_counter()
        if close:
            self.transport.close()


def _address(line: bytes) -> str:
    """The address of ``MAIL FROM:<a@b> PARAM=...``, lower-cased."""
    rest = line.split(b":", 1)[1].strip() if b":" in line else b""
    address = rest[1:].split(b">", 1)[0] if rest.startswith(b"<") else rest.split(b" ", 1)[0]
    return address.decode("ascii", "replace").lower()


class ControlProtocol(asyncio.Protocol):
    """One request line, one JSON line back: ``stats``, ``stats times`` or ``reset``."""

    def __init__(self, state: RelayState) -> None:
        self.state = state
        self.buffer = b""

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if b"\n" not in self.buffer:
            return
        words = self.buffer.split(b"\n", 1)[0].decode().split()
        if words[:1] == ["reset"]:
            self.state.reset()
            answer: dict[str, Any] = {"reset": True}
        elif words[:1] == ["stats"]:
            answer = self.state.stats(times="times" in words[1:])
        else:
            answer = {"error": "ask for: stats [times] | reset"}
        self.transport.write(json.dumps(answer).encode() + b"\n")
        self.transport.close()


def request(control_port: int, command: str, host: str = "127.0.0.1", timeout: float = 30.0) -> dict[str, Any]:
    """Ask a relay process for its figures (``stats``, ``stats times``) or to ``reset`` them."""
    with socket.create_connection((host, control_port), timeout=timeout) as sock:
        sock.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := sock.recv(1 << 16):
            chunks.append(chunk)
    return json.loads(b"".join(chunks))


class Relay:
    """The relay in a thread of this process (for tests); ``python bench/relay.py`` runs it as its own process."""

    def __init__(self, *, latency: float = 0.0, command_latency: float = 0.0, host: str = "127.0.0.1") -> None:
        self.host = host
        self.state = RelayState(latency, command_latency)
        self.port = 0
        self.control_port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="measuring-relay", daemon=True)

    def start(self) -> Relay:
        self._thread.start()
        self.port, self.control_port = asyncio.run_coroutine_threadsafe(self._open(), self._loop).result(10)
        return self

    async def _open(self) -> tuple[int, int]:
        self._servers = await open_servers(self.state, self.host)
        return tuple(server.sockets[0].getsockname()[1] for server in self._servers)

    def stats(self, *, times: bool = False) -> dict[str, Any]:
        return self._call(lambda: self.state.stats(times=times))

    def reset(self) -> None:
        self._call(self.state.reset)

    def _call(self, func):
        async def run():
            return func()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    def stop(self) -> None:
        async def close() -> None:
            for server in self._servers:
                server.close()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


async def open_servers(state: RelayState, host: str, port: int = 0, control_port: int = 0) -> list[asyncio.Server]:
    loop = asyncio.get_running_loop()
    smtp = await loop.create_server(lambda: RelayProtocol(state), host, port, backlog=1024)
    control = await loop.create_server(lambda: ControlProtocol(state), host, control_port)
    return [smtp, control]


async def serve(args: argparse.Namespace) -> None:
    state = RelayState(args.latency_ms / 1000, args.command_latency_ms / 1000)
    servers = await open_servers(state, args.host, args.port, args.control_port)
    print(*(server.sockets[0].getsockname()[1] for server in servers), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    for server in servers:
        server.close()
    stats = state.stats(times=True)
    if args.stats_file:
        Path(args.stats_file).write_text(json.dumps(stats))
    print(f"accepted {stats['accepted']}, peak connections {stats['connections']['peak']}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=float, default=0.0, help="before the reply to each message's end")
    parser.add_argument("--command-latency-ms", type=float, default=0.0, help="before every other reply")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--control-port", type=int, default=0)
    parser.add_argument("--stats-file", default=None, help="write the figures (MAIL FROM times included) here at exit")
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()

"""An SMTP relay for the chaos soak: it misbehaves at random and remembers every arrival.

Each SMTP transaction is recorded from the server's side: when MAIL FROM
arrived (the kernel's receive time, queues.arrival_stamps), the envelope
sender (which service sent it), the Message-ID and recipient once DATA
arrived, the reply given and when, and which scheduler process was on the
other end of the connection (read from /proc: the client's socket belongs to
exactly one of the test's scheduler processes).

After DATA it answers, at random: 451 (try again), 554 (refused for good),
or, sometimes, nothing for longer than the client waits (a stall: the mail
is taken, the reply comes too late, so the sender cannot know the outcome).
Otherwise 250. Listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiosmtpd.smtp import SMTP, Envelope, Session

from queues.arrival_stamps import StampingListener

_MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*(<[^>\r\n]+>)", re.IGNORECASE | re.MULTILINE)

OK, TEMPFAIL, PERMFAIL, STALL = "ok", "tempfail", "permfail", "stall"


@dataclass
class Arrival:
    """One SMTP transaction as the relay saw it."""

    started_at: float  # MAIL FROM's arrival (time.time()'s clock): the moment the send started
    mail_from: str
    worker: str  # the scheduler process on the other end ("" if it could not be told)
    message_id: str = ""  # empty if the conversation ended before DATA
    recipient: str = ""
    code: int = 0  # the reply to DATA (0: none given)
    stalled: bool = False  # the reply was held back longer than the client waits
    replied_at: float = 0.0

    @property
    def accepted(self) -> bool:
        """The relay took the mail (a stalled mail is taken too: only its reply is late)."""
        return 200 <= self.code < 300


def socket_owner(client_port: int, server_port: int, processes: dict[int, str]) -> str:
    """Which of ``processes`` (pid -> name) holds the TCP socket 127.0.0.1:client_port -> server_port."""
    inode = _socket_inode(client_port, server_port)
    if inode is None:
        return ""
    target = f"socket:[{inode}]"
    for pid, name in processes.items():
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return name
            except OSError:
                continue
    return ""


def _socket_inode(client_port: int, server_port: int) -> str | None:
    try:
        with open("/proc/net/tcp") as table:
            lines = table.readlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        local, remote, inode = fields[1], fields[2], fields[9]
        if int(local.split(":")[1], 16) == client_port and int(remote.split(":")[1], 16) == server_port:
            return inode
    return None


class _Handler:
    def __init__(self, relay: ChaosRelay) -> None:
        self.relay = relay

    async def handle_MAIL(self, server, session: Session, envelope: Envelope, address: str, mail_options) -> str:
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        envelope.arrival = self.relay.add(
            Arrival(started_at=server.arrived_at(), mail_from=address, worker=getattr(session, "worker", ""))
        )
        return "250 OK"

    async def handle_RCPT(self, server, session: Session, envelope: Envelope, address: str, rcpt_options) -> str:
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session: Session, envelope: Envelope) -> str:
        relay = self.relay
        content = envelope.original_content or envelope.content or b""
        if isinstance(content, str):
            content = content.encode()
        head = content[: content.find(b"\r\n\r\n") + 2] if b"\r\n\r\n" in content else content
        found = _MESSAGE_ID.search(head)
        arrival: Arrival = envelope.arrival
        choice = relay.choose()
        with relay.lock:
            arrival.message_id = found.group(1).decode() if found else ""
            arrival.recipient = envelope.rcpt_tos[0] if envelope.rcpt_tos else ""
        if choice == TEMPFAIL:
            reply = "451 4.3.0 Temporary failure, try again later"
        elif choice == PERMFAIL:
            reply = "554 5.7.1 Message rejected"
        else:
            reply = "250 2.0.0 OK queued"
        with relay.lock:
            # Like a real server, the mail is taken once it has arrived; a stall
            # only holds the reply back (and the client may hang up meanwhile).
            arrival.code = int(reply[:3])
            arrival.stalled = choice == STALL
            arrival.replied_at = time.time() + (relay.stall_seconds if arrival.stalled else 0.0)
        if arrival.stalled:
            await asyncio.sleep(relay.stall_seconds)
        return reply


class _RelaySMTP(SMTP):
    def __init__(self, handler: _Handler, relay: ChaosRelay, listener: StampingListener) -> None:
        super().__init__(handler, hostname="soak-relay", decode_data=False, ident="EDM soak relay")
        self._relay = relay
        self._listener = listener

    def arrived_at(self) -> float:
        """When the command being handled reached this host (see queues.sink)."""
        return self._listener.arrived_at(self.session.peer)

    def connection_made(self, transport) -> None:
        self._relay.connections.add(transport)
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        if peer and self.session is not None:
            self.session.worker = socket_owner(peer[1], self._relay.port, self._relay.processes())

    def connection_lost(self, error) -> None:
        self._relay.connections.discard(self.transport)
        super().connection_lost(error)


class ChaosRelay:
    """The relay on a background thread; ``port`` is known after ``start()``."""

    def __init__(
        self,
        *,
        seed: int,
        tempfail: float,
        permfail: float,
        stall: float,
        stall_seconds: float,
        processes: Callable[[], dict[int, str]],
    ) -> None:
        self.port = 0
        self.stall_seconds = stall_seconds
        self.processes = processes
        self._odds = ((TEMPFAIL, tempfail), (PERMFAIL, permfail), (STALL, stall))
        self._rng = random.Random(seed)
        self.lock = threading.Lock()
        self.arrivals: list[Arrival] = []
        self.connections: set = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None

    def choose(self) -> str:
        with self.lock:
            roll = self._rng.random()
        for choice, odds in self._odds:
            if roll < odds:
                return choice
            roll -= odds
        return OK

    def add(self, arrival: Arrival) -> Arrival:
        with self.lock:
            self.arrivals.append(arrival)
        return arrival

    def snapshot(self) -> list[Arrival]:
        with self.lock:
            return [Arrival(**vars(a)) for a in self.arrivals]

    def count(self) -> int:
        with self.lock:
            return len(self.arrivals)

    def _run_loop(self) -> None:
        # The relay answers each command: on a machine the soak keeps busy, a
        # thread the kernel puts off answers late. Where the tests may, this thread goes first.
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), -10)
        self._loop.run_forever()

    def start(self) -> ChaosRelay:
        sys.setswitchinterval(min(sys.getswitchinterval(), 0.0005))  # prompt replies (see queues.sink)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="soak-relay", daemon=True)
        self._thread.start()
        handler = _Handler(self)
        listener = StampingListener.bound("127.0.0.1", 0)
        create = self._loop.create_server(lambda: _RelaySMTP(handler, self, listener), sock=listener)
        self._server = asyncio.run_coroutine_threadsafe(create, self._loop).result(timeout=10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def shutdown(self) -> None:
        if self._loop is None or self._server is None:
            return
        server, self._server = self._server, None

        async def _close() -> None:
            server.close()
            for transport in list(self.connections):
                transport.abort()
            await server.wait_closed()

        asyncio.run_coroutine_threadsafe(_close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._loop = None

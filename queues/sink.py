"""A local SMTP sink: accepts mail, records it, and can misbehave on demand.

Used by the demo (``make run``), the tests and the benchmarks. It records each
message's Message-ID, envelope sender (which service sent it), recipient and
arrival time; MAIL FROM is stamped with the kernel's receive time
(queues.arrival_stamps), so a sink thread held up does not bunch the stamps.
Failures can be injected:

- by recipient local part: ``tempfail…`` gets 451 at RCPT, ``permfail…`` 550
  at RCPT, ``datafail…`` 554 after DATA, ``flaky…`` 451 after DATA the first
  time a Message-ID is seen and 250 after that;
- for everything: ``mode`` = ``"tempfail"`` (451 after DATA) or
  ``"permfail"`` (554 after DATA);
- ``latency`` seconds before the reply to DATA (the message is recorded on arrival);
- STARTTLS or TLS from the first byte, and AUTH, when given a context and credentials;
- ``stop()``/``start()`` to be down.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import ssl
import sys
import threading
import time
import warnings
from dataclasses import dataclass

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from queues.arrival_stamps import StampingListener

_MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*(<[^>\r\n]+>)", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class SinkRecord:
    message_id: str
    mail_from: str
    recipient: str
    received_at: float  # time.time(): the end of DATA
    size: int
    content: bytes | None = None
    started_at: float = 0.0  # MAIL FROM's arrival (the kernel's receive time)
    replied_at: float = 0.0  # the final reply (received_at plus the latency)


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_MAIL(self, server, session: Session, envelope: Envelope, address: str, mail_options) -> str:
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        envelope.started_at = server.arrived_at()
        self.sink.attribute(server, address)
        return "250 OK"

    async def handle_RCPT(self, server, session: Session, envelope: Envelope, address: str, rcpt_options) -> str:
        local = address.split("@", 1)[0].lower()
        if local.startswith("tempfail"):
            return "451 4.3.0 Temporary failure, try again later"
        if local.startswith("permfail"):
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session: Session, envelope: Envelope) -> str:
        reply = self._accept(envelope)
        # Like a real server: the message is taken (and recorded) as soon as
        # it arrives; only the reply is late.
        if self.sink.latency:
            await asyncio.sleep(self.sink.latency)
        return reply

    def _accept(self, envelope: Envelope) -> str:
        sink = self.sink
        content = envelope.original_content or envelope.content or b""
        if isinstance(content, str):
            content = content.encode()
        head = content[: content.find(b"\r\n\r\n") + 2] if b"\r\n\r\n" in content else content
        found = _MESSAGE_ID.search(head)
        message_id = found.group(1).decode() if found else ""
        local = envelope.rcpt_tos[0].split("@", 1)[0].lower() if envelope.rcpt_tos else ""
        if sink.mode == "tempfail":
            return "451 4.3.2 System not accepting messages right now"
        if sink.mode == "permfail" or local.startswith("datafail"):
            return "554 5.7.1 Message rejected as spam"
        if local.startswith("flaky"):
            with sink.lock:
                first_time = message_id not in sink.flaky_seen
                sink.flaky_seen.add(message_id)
            if first_time:
                return "451 4.4.5 Try again"
        record = SinkRecord(
            message_id=message_id,
            mail_from=envelope.mail_from or "",
            recipient=envelope.rcpt_tos[0] if envelope.rcpt_tos else "",
            received_at=time.time(),
            size=len(content),
            content=content if sink.keep_content else None,
            started_at=getattr(envelope, "started_at", 0.0),
        )
        record = dataclasses.replace(record, replied_at=record.received_at + sink.latency)
        with sink.lock:
            sink.records.append(record)
        return "250 2.0.0 OK queued"


class _SinkSMTP(SMTP):
    def __init__(self, handler: _Handler, sink: SmtpSink, listener: StampingListener) -> None:
        options = {}
        if sink.starttls_context is not None:
            options.update(tls_context=sink.starttls_context, require_starttls=True)
        if sink.credentials is not None:
            # With TLS from the first byte aiosmtpd cannot tell the session is
            # encrypted, so it must not insist on STARTTLS before AUTH (and
            # would warn that it does not).
            options.update(
                auth_required=True,
                auth_require_tls=sink.starttls_context is not None,
                authenticator=sink.authenticate,
            )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
            super().__init__(handler, hostname="edm-sink", decode_data=False, ident="EDM sink", **options)
        self._sink = sink
        self._listener = listener

    def arrived_at(self) -> float:
        """When the command being handled reached this host: the kernel's time of the session's last read
        (a client waits for the reply to MAIL FROM, or pipelines the envelope in one write, so nothing
        later has been read)."""
        return self._listener.arrived_at(self.session.peer)

    def connection_made(self, transport) -> None:
        self._sink.connections.add(transport)
        with self._sink.lock:
            self._sink.opened += 1
        super().connection_made(transport)

    def connection_lost(self, error) -> None:
        self._sink.connections.discard(self.transport)
        self._sink.detach(self)
        super().connection_lost(error)


class SmtpSink:
    """An SMTP server on a background thread; ``port`` is known after ``start()``.

    A subclass may answer differently by setting ``handler_class`` to a subclass of ``_Handler``.
    """

    handler_class: type[_Handler] = _Handler

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        latency: float = 0.0,
        keep_content: bool = False,
        starttls_context: ssl.SSLContext | None = None,
        implicit_tls_context: ssl.SSLContext | None = None,
        credentials: dict[str, str] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        # STARTTLS required / TLS from the first byte / AUTH required (LOGIN, PLAIN).
        self.starttls_context = starttls_context
        self.implicit_tls_context = implicit_tls_context
        self.credentials = credentials
        self.latency = latency
        self.keep_content = keep_content
        self.mode = "ok"
        self.records: list[SinkRecord] = []
        self.flaky_seen: set[str] = set()
        self.lock = threading.Lock()
        self.connections: set = set()  # open now
        self.opened = 0  # connections accepted since the sink was made
        # Open connections per sender (a connection counts for the MAIL FROM of
        # its first mail), and the most seen at once: a service's connections.
        self.open_by_sender: dict[str, int] = {}
        self.peak_by_sender: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None

    def _run_loop(self) -> None:
        # Replies and DATA stamps are the thread's own: on a busy machine a
        # thread the kernel puts off answers late. Where the process may, this one goes first.
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), -10)
        self._loop.run_forever()

    def start(self) -> SmtpSink:
        # The sink's thread answers each command: it gets the interpreter
        # within half a millisecond, not after another thread's 5 ms turn.
        sys.setswitchinterval(min(sys.getswitchinterval(), 0.0005))
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self._run_loop, name="smtp-sink", daemon=True)
            self._thread.start()
        handler = self.handler_class(self)
        listener = StampingListener.bound(self.host, self.port)
        create = self._loop.create_server(
            lambda: _SinkSMTP(handler, self, listener), sock=listener, ssl=self.implicit_tls_context
        )
        self._server = asyncio.run_coroutine_threadsafe(create, self._loop).result(timeout=10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self, *, drop_connections: bool = True) -> None:
        """Stop listening (and cut open sessions): the server is down until ``start()``."""
        if self._server is None or self._loop is None:
            return
        server, self._server = self._server, None

        async def _close() -> None:
            server.close()
            if drop_connections:
                for transport in list(self.connections):
                    transport.abort()
            await server.wait_closed()

        asyncio.run_coroutine_threadsafe(_close(), self._loop).result(timeout=10)

    def shutdown(self) -> None:
        self.stop()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=10)
            self._loop = None

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.shutdown()

    def authenticate(self, server, session, envelope, mechanism: str, auth_data) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and self.credentials is not None
            and self.credentials.get(auth_data.login.decode()) == auth_data.password.decode()
        )
        return AuthResult(success=ok, handled=False)

    def attribute(self, protocol, sender: str) -> None:
        if getattr(protocol, "edm_sender", None) is not None:
            return
        protocol.edm_sender = sender
        with self.lock:
            now_open = self.open_by_sender[sender] = self.open_by_sender.get(sender, 0) + 1
            self.peak_by_sender[sender] = max(self.peak_by_sender.get(sender, 0), now_open)

    def detach(self, protocol) -> None:
        sender = getattr(protocol, "edm_sender", None)
        if sender is not None:
            with self.lock:
                self.open_by_sender[sender] -= 1

    def snapshot(self) -> list[SinkRecord]:
        with self.lock:
            return list(self.records)

    def count(self) -> int:
        with self.lock:
            return len(self.records)

"""When bytes reached a TCP server, as the kernel saw them arrive (not when the server got round to them).

A test SMTP server stamps each MAIL FROM to check the senders' rate. Stamped
as its thread reads the command, a stamp is late by however long that thread
was held up: a full garbage collection of the test process (150 ms on a busy
machine) or the kernel putting the thread off. MAIL FROMs that arrived a rate
apart meanwhile are then read, and stamped, together.

``StampingListener`` is a listening socket for ``loop.create_server(sock=...)``:
each connection it accepts reads with ``recvmsg`` and keeps the kernel's
receive time (``SO_TIMESTAMPNS``, the wall clock, as ``time.time()``) of what
it read last; ``arrived_at(peer)`` tells it. asyncio's socket transports read
with ``recv`` (also beneath TLS), so this holds for plain, STARTTLS and TLS
sessions alike.
"""

from __future__ import annotations

import socket
import struct
import time
import weakref

# Linux's values where the socket module lacks the names.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SCM_TIMESTAMPNS = getattr(socket, "SCM_TIMESTAMPNS", SO_TIMESTAMPNS)
_TIMESPEC = struct.Struct("@ll")  # struct timespec: seconds, nanoseconds


class StampedConnection(socket.socket):
    """An accepted connection that remembers when what it read last arrived."""

    arrived_at: float | None = None

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        data, ancillary, _, _ = self.recvmsg(bufsize, socket.CMSG_SPACE(_TIMESPEC.size), flags)
        self.arrived_at = _kernel_time(ancillary)
        return data


def _kernel_time(ancillary: list[tuple[int, int, bytes]]) -> float | None:
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS and len(payload) >= _TIMESPEC.size:
            seconds, nanoseconds = _TIMESPEC.unpack_from(payload)
            return seconds + nanoseconds / 1e9
    return None


class StampingListener(socket.socket):
    """A listening socket whose connections are ``StampedConnection``s, known by their peer address."""

    def __init__(self, family: int = socket.AF_INET) -> None:
        super().__init__(family, socket.SOCK_STREAM)
        self._accepted: weakref.WeakValueDictionary = weakref.WeakValueDictionary()

    @classmethod
    def bound(cls, host: str, port: int, *, backlog: int = 100) -> StampingListener:
        """Listening on host:port (0: a free port), the address reusable at once after a stop."""
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        listener = cls(family)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(address)
            listener.listen(backlog)
            listener.setblocking(False)
        except OSError:
            listener.close()
            raise
        return listener

    def accept(self) -> tuple[StampedConnection, object]:
        fd, peer = self._accept()
        connection = StampedConnection(self.family, self.type, self.proto, fileno=fd)
        connection.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self._accepted[peer] = connection
        return connection, peer

    def arrived_at(self, peer: object) -> float:
        """When what the connection from ``peer`` read last reached this host; now if that is not known."""
        connection = self._accepted.get(peer)
        stamp = connection.arrived_at if connection is not None else None
        return stamp if stamp is not None else time.time()

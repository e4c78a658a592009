"""A minimal SMTP sink for throughput benchmarks: the cheapest correct SMTP peer.

aiosmtpd (bench/sink_server.py, the tests' server) spends about 0.8 ms of CPU
per message; on a 2-core machine that is most of a core at 1,000 mails/s,
taken from the scheduler being measured. This sink answers the same protocol
(EHLO, MAIL, RCPT, DATA with dot-terminated data, RSET, NOOP, QUIT) with a
fraction of the work, so a benchmark can show what the scheduler itself
sustains. It prints its port, and the number of messages when stopped.

    python bench/fast_sink.py [--latency-ms 5]
"""

from __future__ import annotations

import argparse
import asyncio
import signal


class SinkProtocol(asyncio.Protocol):
    def __init__(self, state: dict, latency: float) -> None:
        self.state = state
        self.latency = latency
        self.buffer = b""
        self.in_data = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(b"220 fast-sink ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            if self.in_data:
                end = self.buffer.find(b"\r\n.\r\n")
                if end < 0:
                    return
                self.buffer = self.buffer[end + 5 :]
                self.in_data = False
                self.state["messages"] += 1
                if self.latency:
                    asyncio.get_running_loop().call_later(self.latency, self.transport.write, b"250 OK\r\n")
                else:
                    self.transport.write(b"250 OK\r\n")
                continue
            end = self.buffer.find(b"\r\n")
            if end < 0:
                return
            line, self.buffer = self.buffer[:end], self.buffer[end + 2 :]
            verb = line[:4].upper()
            if verb == b"DATA":
                self.in_data = True
                # The DATA command's data may start right away in the buffer: keep going.
                self.transport.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                # Accept an empty body that arrives as ".\r\n" directly.
                self.buffer = b"\r\n" + self.buffer if self.buffer.startswith(b".\r\n") else self.buffer
            elif verb == b"EHLO":
                self.transport.write(b"250-fast-sink\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
            elif verb == b"QUIT":
                self.transport.write(b"221 Bye\r\n")
                self.transport.close()
                return
            else:
                self.transport.write(b"250 OK\r\n")


async def serve(port: int, latency: float) -> None:
    state = {"messages": 0}
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SinkProtocol(state, latency), "127.0.0.1", port)
    print(server.sockets[0].getsockname()[1], flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    server.close()
    print(f"received {state['messages']}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.latency_ms / 1000))


if __name__ == "__main__":
    main()

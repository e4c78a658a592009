"""The ceiling for a scheduler figure: raw smtplib, no database, over the same connections to the same relay.

Each connection is its own thread with one ``smtplib.SMTP`` kept open for the
whole run, sending ``sendmail`` after ``sendmail``; mails of the given size are
shared out evenly. Connection i sends as ``senders[i % len(senders)]``, so the
relay attributes the connections to services as it does the scheduler's.
With several processes the connections are split between them (Python runs
one process's threads on one core at a time, as it does a scheduler's) and all
start sending at the same moment. The relay measures the result.

    python bench/smtp_ceiling.py --port P --connections 20 --mails 5000 --size 1500 \
        --senders a@x.example,b@x.example [--processes 1]
"""

from __future__ import annotations

import argparse
import smtplib
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

RECIPIENT = "ceiling@relay.example"


def message(sender: str, size: int, number: int) -> bytes:
    """A plain mail of about ``size`` bytes (headers included), CRLF lines of at most 78 characters."""
    head = (
        f"From: {sender}\r\nTo: {RECIPIENT}\r\nSubject: ceiling {number}\r\n"
        f"Message-ID: <{number}.{time.monotonic_ns()}@ceiling.example>\r\nContent-Type: text/plain\r\n\r\n"
    ).encode()
    body_size = max(0, size - len(head))
    line = b"x" * 76 + b"\r\n"
    body = line * (body_size // len(line)) + b"y" * max(0, body_size % len(line) - 2) + b"\r\n"
    return head + body


def send_in_threads(
    *,
    host: str,
    port: int,
    connections: int,
    mails: int,
    size: int,
    senders: Sequence[str],
    first_connection: int = 0,
    start_at: float | None = None,
) -> int:
    """Open the connections, then (at ``start_at``, time.monotonic) send ``mails`` over them; returns the sent."""
    shares = [mails // connections + (1 if i < mails % connections else 0) for i in range(connections)]
    sessions = [smtplib.SMTP(host, port, timeout=60) for _ in range(connections)]
    for session in sessions:
        session.ehlo()
    ready = threading.Barrier(connections + 1)
    sent = [0] * connections
    failures: list[BaseException] = []

    def run(index: int) -> None:
        sender = senders[(first_connection + index) % len(senders)]
        body = message(sender, size, index)
        ready.wait()
        try:
            for _ in range(shares[index]):
                sessions[index].sendmail(sender, [RECIPIENT], body)
                sent[index] += 1
        except (smtplib.SMTPException, OSError) as exc:
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(connections)]
    for thread in threads:
        thread.start()
    if start_at is not None:
        time.sleep(max(0.0, start_at - time.monotonic()))
    ready.wait()
    for thread in threads:
        thread.join()
    for session in sessions:
        try:
            session.quit()
        except (smtplib.SMTPException, OSError):
            session.close()
    if failures:
        raise RuntimeError(f"{len(failures)} connection(s) failed, the first: {failures[0]!r}")
    return sum(sent)


def run_ceiling(
    *,
    port: int,
    connections: int,
    mails: int,
    size: int,
    senders: Sequence[str],
    processes: int = 1,
    host: str = "127.0.0.1",
) -> None:
    """Send ``mails`` over ``connections`` split between ``processes`` processes of this script; wait for them."""
    processes = max(1, min(processes, connections))
    start_at = time.monotonic() + 1.0 + 0.3 * processes  # every process connected and waiting by then
    children = []
    first = 0
    for p in range(processes):
        share = connections // processes + (1 if p < connections % processes else 0)
        mail_share = mails * (first + share) // connections - mails * first // connections
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            f"--host={host}",
            f"--port={port}",
            f"--connections={share}",
            f"--mails={mail_share}",
            f"--size={size}",
            f"--senders={','.join(senders)}",
            f"--first-connection={first}",
            f"--start-at={start_at}",
        ]
        children.append(subprocess.Popen(command))
        first += share
    codes = [child.wait() for child in children]
    if any(codes):
        raise RuntimeError(f"ceiling processes exited with {codes}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--mails", type=int, default=1000)
    parser.add_argument("--size", type=int, default=1500, help="bytes per message, headers included")
    parser.add_argument("--senders", default="ceiling@relay.example", help="comma-separated MAIL FROM addresses")
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--first-connection", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    senders = args.senders.split(",")
    if args.first_connection is None:
        run_ceiling(
            host=args.host,
            port=args.port,
            connections=args.connections,
            mails=args.mails,
            size=args.size,
            senders=senders,
            processes=args.processes,
        )
        return
    send_in_threads(
        host=args.host,
        port=args.port,
        connections=args.connections,
        mails=args.mails,
        size=args.size,
        senders=senders,
        first_connection=args.first_connection,
        start_at=args.start_at,
    )


if __name__ == "__main__":
    main()

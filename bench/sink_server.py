"""An SMTP sink in its own process, for benchmarks: prints its port, then its count when stopped.

python bench/sink_server.py [--latency-ms 5]
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from queues.sink import SmtpSink


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    sink = SmtpSink(port=args.port, latency=args.latency_ms / 1000).start()
    print(sink.port, flush=True)
    stop.wait()
    records = sink.snapshot()
    sink.shutdown()
    ids = [r.message_id for r in records]
    print(f"received {len(records)} distinct {len(set(ids))}", flush=True)


if __name__ == "__main__":
    main()

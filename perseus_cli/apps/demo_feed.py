"""The demo's stand-in for a market-data feed: the child each demo agent supervises.

`python -m perseus_cli.apps.demo_feed --exchange coinbase --symbols 25` writes
a line of made-up traffic every few seconds (what `o` on a card shows, live)
until SIGTERM. Two options give it the behaviours the demo is there to show:
`--crash-after` makes it exit non-zero, as a feed whose websocket dies would
(the agent's restart policy backs off, then gives up: FATAL), and
`--listen-port` makes it open a TCP port only after `--listen-after` seconds,
as a service that loads its state before it serves (the agent's `ready_tcp`
keeps it warming until then, and `health_tcp` checks it while active).

Only the standard library, so the demo needs nothing but the interpreter
that runs it; it never touches Redis (the agent gives it no Redis settings).
"""

from __future__ import annotations

import argparse
import random
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType

_CRASHES = (
    (1, "websocket closed (1006) by wss://stream.example"),
    (2, "order book checksum mismatch"),
    (75, "rate limited (429) on REST snapshot"),
)
"""(exit code, last stderr line) of the crashes a feed may have."""


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="demo_feed", description=__doc__.splitlines()[0])
    parser.add_argument("--exchange", required=True, help="the exchange name it says it streams")
    parser.add_argument("--symbols", type=int, default=10, help="how many symbols it streams")
    parser.add_argument(
        "--every", type=float, default=3.0, help="seconds between two lines of output"
    )
    parser.add_argument(
        "--crash-after", type=float, default=None, help="exit non-zero after this many seconds"
    )
    parser.add_argument(
        "--listen-port", type=int, default=None, help="open this port on 127.0.0.1, once ready"
    )
    parser.add_argument(
        "--listen-after", type=float, default=0.0, help="seconds before the port opens"
    )
    return parser.parse_args(argv)


def _stop(_signum: int, _frame: FrameType | None) -> None:
    print("feed: SIGTERM, unsubscribing and closing", flush=True)
    sys.exit(0)


def _serve(port: int) -> None:
    """Listen on 127.0.0.1:`port` and answer every connection by closing it: enough
    for a TCP readiness or health check, which only connects."""
    server = socket.create_server(("127.0.0.1", port))
    print(f"feed: order books loaded, listening on 127.0.0.1:{port}", flush=True)

    def accept() -> None:
        while True:
            connection, _ = server.accept()
            connection.close()

    threading.Thread(target=accept, daemon=True).start()


def main(argv: Sequence[str] | None = None) -> None:
    """Run the feed until SIGTERM (or its crash)."""
    args = _parse(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _stop)
    started = time.monotonic()
    print(f"feed: connecting to wss://stream.example/{args.exchange}", flush=True)
    print(f"feed: subscribed to {args.symbols} symbols", flush=True)
    if args.listen_port is not None:
        print(f"feed: loading order books, port {args.listen_port} opens when done", flush=True)
    listen_at = None if args.listen_port is None else started + args.listen_after
    crash_at = None if args.crash_after is None else started + args.crash_after
    next_line = started + args.every
    while True:
        now = time.monotonic()
        if listen_at is not None and now >= listen_at:
            assert args.listen_port is not None
            _serve(args.listen_port)
            listen_at = None
        if crash_at is not None and now >= crash_at:
            code, reason = random.choice(_CRASHES)
            print(f"feed: {reason}", file=sys.stderr, flush=True)
            sys.exit(code)
        if now >= next_line:
            rate = random.randint(40, 90) * args.symbols
            lag = random.randint(3, 40)
            print(f"feed: {rate:,} quotes/s on {args.symbols} symbols, lag {lag} ms", flush=True)
            next_line += args.every
        due = [t for t in (next_line, listen_at, crash_at) if t is not None]
        time.sleep(max(0.0, min(due) - time.monotonic()))


if __name__ == "__main__":
    main()

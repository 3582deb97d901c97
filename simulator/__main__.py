"""`python -m simulator [--seed N] [--scenario demo | --replay DIR] [--speed N]
[--heartbeat-timeout S] [--port N]`: serve the venue until SIGTERM/SIGINT.

`--scenario demo --speed N` runs the demo's makers, takers and whale N times as often.
`--replay DIR` serves a recording made by `python -m orchestrator record` (its markets, books and
websocket frames on their recorded timing, `--speed` times faster; see `simulator.replay`).
`--port N` gives stable URLs: the CLOB on N, Gamma (and the geoblock check) on N+1, the Data
API on N+2, both websockets on N+3, the chain (JSON-RPC and relayer) on N+4.
Prints one JSON line with the URLs, then serves. Exits 0 on a signal (Ctrl-C included), 2 if the
recording cannot be read, 3 if a port is already taken.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

import orjson

from recording.format import RecordingError
from simulator.sim import Simulator


async def serve(
    seed: int,
    scenario: str | None,
    settle_delay_s: float,
    heartbeat_timeout_s: float = 10.0,
    replay: Path | None = None,
    speed: float = 1.0,
    port: int = 0,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Simulator(
        seed=seed,
        scenario=scenario,
        settle_delay_s=settle_delay_s,
        heartbeat_timeout_s=heartbeat_timeout_s,
        replay=replay,
        speed=speed,
        port=port,
    ) as sim:
        urls = {
            "clob_url": sim.clob_url,
            "gamma_url": sim.gamma_url,
            "geoblock_url": sim.geoblock_url,
            "data_url": sim.data_url,
            "market_ws_url": sim.market_ws_url,
            "user_ws_url": sim.user_ws_url,
            "rpc_url": sim.rpc_url,
            "relayer_url": sim.relayer_url,
        }
        sys.stdout.write(orjson.dumps(urls).decode() + "\n")
        sys.stdout.flush()
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m simulator", description=__doc__)
    p.add_argument("--seed", type=int, default=1)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--scenario", choices=["demo"], default=None)
    which.add_argument("--replay", type=Path, default=None, metavar="DIR", help="a recording")
    p.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="replay, or run the demo scenario, N times faster (1)",
    )
    p.add_argument("--settle-delay", type=float, default=0.05, dest="settle_delay_s")
    # The venue's order dead-man switch: 10 s per API key (Polymarket/ts-sdk order-heartbeats.ts).
    p.add_argument("--heartbeat-timeout", type=float, default=10.0, dest="heartbeat_timeout_s")
    p.add_argument(
        "--port",
        type=int,
        default=0,
        help="the CLOB's port; Gamma, the Data API and the websockets take the next three "
        "(default: any free ports)",
    )
    args = p.parse_args(argv)
    if args.heartbeat_timeout_s <= 0:
        p.error("--heartbeat-timeout must be positive")
    if not args.speed > 0:
        p.error("--speed must be positive")
    if not (args.port == 0 or 1 <= args.port <= 65532):
        p.error("--port must be between 1 and 65532 (it and the next three are used)")
    try:
        asyncio.run(
            serve(
                args.seed,
                args.scenario,
                args.settle_delay_s,
                args.heartbeat_timeout_s,
                replay=args.replay,
                speed=args.speed,
                port=args.port,
            )
        )
    except (RecordingError, ValueError) as e:
        if args.replay is None:
            raise
        print(f"simulator: cannot replay {args.replay}: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(
            f"simulator: cannot listen on ports {args.port}-{args.port + 3}: {e}", file=sys.stderr
        )
        return 3
    except KeyboardInterrupt:  # Ctrl-C before the loop's handler is installed
        return 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

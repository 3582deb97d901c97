"""The load bench's market feed (`python -m bench.health blaster`): a market websocket that sends
`price_change` events at a steady rate to every connection, answers `PING`, and on SIGUSR1 stops
sending and prints `sent N`, the exact number of events it handed to connections (the count the
load test compares with what the daemon counted)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import time


async def blast(port: int, per_s: float, batch: int) -> None:
    from websockets.asyncio.server import ServerConnection, serve

    market = "0x" + "ab" * 32
    sent = [0]  # price_change events handed to a connection, all connections together
    paused = asyncio.Event()  # SIGUSR1: stop sending, keep answering PINGs, print `sent N`

    async def handler(ws: ServerConnection) -> None:
        assets: list[str] = []
        rng = random.Random(7)

        async def reader() -> None:
            async for msg in ws:
                if msg == "PING":
                    await ws.send("PONG")
                    continue
                with contextlib.suppress(ValueError, TypeError, AttributeError):
                    body = json.loads(msg)
                    new = [a for a in body.get("assets_ids", []) if a not in assets]
                    if body.get("operation") == "unsubscribe":
                        continue
                    for a in new:
                        assets.append(a)
                        book = {
                            "event_type": "book",
                            "asset_id": a,
                            "market": market,
                            "bids": [{"price": "0.40", "size": "100"}],
                            "asks": [{"price": "0.60", "size": "100"}],
                            "timestamp": str(int(time.time() * 1000)),
                            "hash": "blaster",
                        }
                        await ws.send(json.dumps(book))

        read_task = asyncio.create_task(reader())
        try:
            interval = batch / per_s
            next_at = time.monotonic()
            while not read_task.done():
                if paused.is_set():
                    await asyncio.wait({read_task})
                    break
                if assets:
                    events = []
                    for _ in range(batch):
                        a = rng.choice(assets)
                        # Levels strictly inside the 0.40 bid / 0.60 ask: the best never moves.
                        bid = rng.random() < 0.5
                        price = f"0.{rng.randint(30, 39) if bid else rng.randint(61, 70)}"
                        events.append(
                            {
                                "event_type": "price_change",
                                "market": market,
                                "timestamp": str(int(time.time() * 1000)),
                                "price_changes": [
                                    {
                                        "asset_id": a,
                                        "price": price,
                                        "size": str(rng.randint(0, 500)),
                                        "side": "BUY" if bid else "SELL",
                                        "hash": "b",
                                        "best_bid": "0.40",
                                        "best_ask": "0.60",
                                    }
                                ],
                            }
                        )
                    # Counted before the await: `send` writes a whole frame to the transport
                    # before it yields, so a pause between two sends sees an exact count.
                    sent[0] += len(events)
                    await ws.send(json.dumps(events))
                next_at += interval
                delay = next_at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif delay < -1.0:
                    next_at = time.monotonic()  # fell behind by a second: do not burst
                else:
                    await asyncio.sleep(0)
        except Exception:  # the connection closed: the daemon reconnects or is stopping
            pass
        finally:
            read_task.cancel()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def pause() -> None:
        paused.set()
        print(f"sent {sent[0]}", flush=True)

    loop.add_signal_handler(signal.SIGUSR1, pause)
    async with serve(handler, "127.0.0.1", port, ping_interval=None, max_size=2**20):
        print("ready", flush=True)
        await stop.wait()

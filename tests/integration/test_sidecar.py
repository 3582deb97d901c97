"""The sidecar over real HTTP: /health, /metrics and bearer-protected control routes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import pytest

from observability.health import CheckResult
from observability.metrics import Metrics
from observability.sidecar import Health, Phase, Sidecar

TOKEN = "control-token-for-tests-0123456789"


@pytest.fixture
async def sidecar() -> AsyncIterator[tuple[Sidecar, Health, list[str]]]:
    health = Health(mode="paper", version="0.1.0")
    health.register("database", lambda: CheckResult(True, "ok"))
    calls: list[str] = []

    async def halt(body: Mapping[str, Any]) -> Mapping[str, Any]:
        calls.append(str(body.get("reason", "")))
        return {"state": "HALTED"}

    sc = Sidecar(host="127.0.0.1", port=0, health=health, metrics=Metrics(), control_token=TOKEN)
    sc.add_control("halt", halt)
    await sc.start()
    yield sc, health, calls
    await sc.stop()


async def test_health_is_503_until_running_then_200(
    sidecar: tuple[Sidecar, Health, list[str]],
) -> None:
    sc, health, _ = sidecar
    url = f"http://127.0.0.1:{sc.bound_port}/health"
    async with aiohttp.ClientSession() as s:
        async with s.get(url) as r:
            assert r.status == 503
            assert (await r.json())["status"] == "starting"
        health.phase = Phase.RUNNING
        async with s.get(url) as r:
            assert r.status == 200
            body = await r.json()
    assert set(body) == {"status", "mode", "version", "uptime_s", "checks"}
    assert body["checks"]["database"] == {"ok": True, "detail": "ok"}


async def test_metrics_are_prometheus_text(sidecar: tuple[Sidecar, Health, list[str]]) -> None:
    sc, _, _ = sidecar
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"http://127.0.0.1:{sc.bound_port}/metrics") as r,
    ):
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        assert "# TYPE polyd_orders_total counter" in await r.text()


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": "Basic x"}],
)
async def test_control_route_refuses_missing_or_wrong_token(
    sidecar: tuple[Sidecar, Health, list[str]], headers: dict[str, str]
) -> None:
    sc, _, calls = sidecar
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"http://127.0.0.1:{sc.bound_port}/halt", headers=headers) as r,
    ):
        assert r.status == 401
    assert calls == []


async def test_control_route_runs_with_the_right_token(
    sidecar: tuple[Sidecar, Health, list[str]],
) -> None:
    sc, _, calls = sidecar
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"http://127.0.0.1:{sc.bound_port}/halt",
            json={"reason": "manual"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as r,
    ):
        assert r.status == 200
        assert await r.json() == {"ok": True, "action": "halt", "state": "HALTED"}
    assert calls == ["manual"]


async def test_control_routes_disabled_without_token() -> None:
    health = Health(mode="paper", version="0")

    async def noop(body: Mapping[str, Any]) -> Mapping[str, Any]:
        raise AssertionError("must not run")

    sc = Sidecar(host="127.0.0.1", port=0, health=health, metrics=Metrics(), control_token=None)
    sc.add_control("halt", noop)
    await sc.start()
    try:
        async with (
            aiohttp.ClientSession() as s,
            s.post(
                f"http://127.0.0.1:{sc.bound_port}/halt",
                headers={"Authorization": "Bearer anything"},
            ) as r,
        ):
            assert r.status == 403
    finally:
        await sc.stop()

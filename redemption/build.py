"""Build the chain clients, the sender and the redeemer from `Settings` (CLI and daemon alike),
and the approvals redemption needs (`approvals_state`, `approve`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from config import Settings
from errors import ConfigError
from models import Position
from observability.metrics import Metrics
from redemption.redeemer import Alert, Redeemer
from redemption.senders import EoaSender, RelayerSender, Sender, SendRefused
from storage.db import Database
from storage.fills import FillRepository
from storage.redemptions import RedemptionRepository
from venue.chain import contracts as cc
from venue.chain.relayer import KIND_OF_SIGNATURE_TYPE, RelayerClient
from venue.chain.rpc import RpcClient
from venue.clob.auth import LocalSigner

APPROVE_COMMAND = "python -m orchestrator approve"


def wallet_of(settings: Settings) -> str:
    """The funder: the EOA itself (signature type 0), else FUNDER_ADDRESS."""
    if settings.private_key is None:
        raise ConfigError(["PRIVATE_KEY is required to redeem or approve"])
    if settings.signature_type == 0:
        return LocalSigner(settings.private_key.get_secret_value()).address
    if settings.funder_address is None:
        raise ConfigError(["FUNDER_ADDRESS is required for SIGNATURE_TYPE 1-3"])
    return settings.funder_address


def build_sender(settings: Settings, session: aiohttp.ClientSession, rpc: RpcClient) -> Sender:
    """EOA → its own transactions; proxy / Safe / deposit wallet → the relayer (API key needed)."""
    assert settings.private_key is not None
    key = settings.private_key.get_secret_value()
    if settings.signature_type == 0:
        return EoaSender(rpc=rpc, key=key, chain_id=settings.chain_id, pol_floor=settings.pol_floor)
    if settings.relayer_api_key is None or settings.relayer_api_key_address is None:
        raise ConfigError(
            [
                "RELAYER_API_KEY and RELAYER_API_KEY_ADDRESS are required to redeem or approve"
                f" from a {KIND_OF_SIGNATURE_TYPE[settings.signature_type]} wallet (they are sent"
                " by Polymarket's relayer; polymarket.com → settings → relayer API keys)"
            ]
        )
    relayer = RelayerClient(
        url=settings.relayer_url,
        session=session,
        api_key=settings.relayer_api_key.get_secret_value(),
        api_key_address=settings.relayer_api_key_address,
        timeout_s=settings.http_timeout_s,
    )
    return RelayerSender(
        relayer=relayer,
        key=key,
        chain_id=settings.chain_id,
        wallet=wallet_of(settings),
        wallet_type=KIND_OF_SIGNATURE_TYPE[settings.signature_type],
    )


def build_redeemer(
    settings: Settings,
    *,
    db: Database,
    session: aiohttp.ClientSession,
    metrics: Metrics | None = None,
    on_positions: Callable[[list[Position]], None] | None = None,
    alert: Alert | None = None,
) -> Redeemer:
    rpc = RpcClient(url=settings.rpc_url, session=session, timeout_s=settings.http_timeout_s)
    return Redeemer(
        wallet=wallet_of(settings),
        sender=build_sender(settings, session, rpc),
        rpc=rpc,
        repo=RedemptionRepository(db=db),
        fills=FillRepository(db=db),
        session=session,
        data_url=settings.data_api_url,
        gamma_url=settings.gamma_api_url,
        metrics=metrics,
        on_positions=on_positions,
        alert=alert,
    )


@dataclass(frozen=True)
class ApprovalState:
    approval: cc.Approval
    approved: bool


async def approvals_state(rpc: RpcClient, wallet: str) -> list[ApprovalState]:
    """Each approval redemption needs (`contracts.redemption_approvals`), read on chain."""
    out = []
    for ap in cc.redemption_approvals():
        raw = await rpc.call(cc.is_approved_for_all(ap.token, wallet, ap.operator))
        out.append(ApprovalState(ap, cc.decode_bool(raw)))
    return out


async def approve(
    settings: Settings, session: aiohttp.ClientSession, *, timeout_s: float = 120.0
) -> list[str]:
    """Set every missing approval (`setApprovalForAll(operator, true)`); return what was set.
    EOA: one transaction each; other wallets: one relayer batch."""
    rpc = RpcClient(url=settings.rpc_url, session=session, timeout_s=settings.http_timeout_s)
    wallet = wallet_of(settings)
    missing = [s.approval for s in await approvals_state(rpc, wallet) if not s.approved]
    if not missing:
        return []
    sender = build_sender(settings, session, rpc)
    calls = [cc.set_approval_for_all(ap.token, ap.operator) for ap in missing]
    batches = [[c] for c in calls] if sender.one_call_per_tx else [calls]
    for batch in batches:
        prepared = await sender.prepare(batch)
        await _send_and_wait(sender, prepared.payload, prepared.tx_hash, timeout_s)
    return [ap.name for ap in missing]


async def _send_and_wait(
    sender: Sender, payload: str, tx_hash: str | None, timeout_s: float
) -> None:
    sent = await sender.send(payload, tx_hash)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        state, _, why = await sender.outcome(sent.tx_hash, sent.relayer_id)
        if state == "confirmed":
            return
        if state == "failed":
            raise SendRefused(f"approval transaction failed: {why}")
        await asyncio.sleep(0.2)
    raise TimeoutError(f"approval not confirmed after {timeout_s:.0f} s")

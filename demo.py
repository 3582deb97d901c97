"""`python -m orchestrator --demo`: what the daemon needs to run live against the built-in venue
simulator.

`prepared()` starts the simulator in-process with its seeded demo scenario (living books, markets
about to end, a whale wallet), generates a throwaway key, funds it at the simulator, writes the
strategies' rule files and yields the settings that run the daemon in **live mode** — the real
signing and submission path — against it. Nothing leaves the machine. `print_summary()` prints
what the run did, from the daemon's own database. The orchestrator runs the daemon in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shlex
import shutil
import socket
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from eth_account import Account
from pydantic import SecretStr

from config import Settings, load_settings
from ledger_check import LedgerCheck, check
from simulator import Retention, Simulator
from storage.engine import describe
from storage.lock import FileLock
from storage.pg import display_url, recreate_schema
from storage.schema_lock import SchemaLock
from storage.views import Views
from venue.chain.contracts import redemption_approvals

DEMO_DIR = Path("data/demo")
OPERATE_ENV = DEMO_DIR / "operate.env"
"""The running demo's settings for the operator commands (`... status --demo` reads them)."""
DEMO_FILE_SETTINGS = (
    "mode",
    "clob_host",
    "gamma_api_url",
    "data_api_url",
    "market_ws_url",
    "user_ws_url",
    "geoblock_url",
    "rpc_url",
    "relayer_url",
    "chain_id",
    "sniper_rules_path",
    "copy_rules_path",
)
"""What `operate()` writes besides where the demo listens: what `doctor --demo` needs."""
OPERATE_COMMANDS = ("status", "positions", "orders", "trades", "pnl", "halt", "resume")
DEMO_COLLATERAL = Decimal("5000")
DEMO_SEED = 7
DEMO_RETENTION = Retention(requests=1_000)
"""The demo's simulator keeps the default history but only 1,000 requests: nothing in the demo
reads its request log (a test's tool), and 10,000 took some 100 minutes to fill at 10x."""
DEFAULT_PORT = 8787
DEMO_SCHEMA = "polyd_demo"
"""With `DATABASE_URL` set, the demo writes to this schema of that database, emptied each run."""

RuleWriter = Callable[[Simulator, Path], dict[str, Any]]
"""Writes a strategy's rule file for the demo scenario; returns the settings that point at it."""


def write_sniper_rules(sim: Any, workdir: Path) -> dict[str, Any]:
    """Write sniper rules for the demo scenario's markets that end soon; return the settings.

    The demo's ending markets trade at 0.95-0.98 and now and then show a dip ask for a second
    or two.
    """
    if getattr(sim, "scenario", None) is None:
        return {}
    path = workdir / "sniper-rules.toml"
    path.write_text(
        "# written by --demo: buy near-certain outcomes of markets about to end\n"
        "[[rules]]\n"
        'name = "demo-near-close"\n'
        'outcome = "Yes"\n'
        'min_price = "0.90"\n'
        'max_price = "0.97"\n'
        'min_size = "5"\n'
        'max_notional = "20"\n'
        "max_entries = 3\n"
        "cooldown_s = 20\n"
        "ends_within_minutes = 30\n"
        "[rules.select]\n"
        "ends_within_minutes = 30\n"
        'tags = ["crypto"]\n'
    )
    return {"sniper_enabled": True, "sniper_rules_path": path}


def write_copy_rules(sim: Any, workdir: Path) -> dict[str, Any]:
    """Write copy rules following the demo scenario's whale; return the settings using them."""
    whale = sim.scenario.whale_address if sim.scenario is not None else None
    if whale is None:
        return {}
    path = workdir / "copy-rules.toml"
    path.write_text(
        "# written by --demo: copy the scenario's whale at 5% of its size\n"
        "[[wallets]]\n"
        f'address = "{whale}"\n'
        'label = "demo-whale"\n'
        'ratio = "0.05"\n'
        'max_trade_notional = "20"\n'
        'max_market_exposure = "150"\n'
        'max_slippage = "0.02"\n'
    )
    return {"copy_enabled": True, "copy_rules_path": path}


RULE_WRITERS: list[RuleWriter] = [write_sniper_rules, write_copy_rules]


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def funded_key(sim: Simulator, collateral: Decimal) -> str:
    """Create a throwaway key, credit its address with `collateral` pUSD at `sim`, return it."""
    account = Account.create()
    sim.fund(account.address, collateral=collateral)
    sim.chain.fund_pol(account.address, Decimal("10"))  # gas for approve / redeem as an EOA
    return "0x" + bytes(account.key).hex()


def simulator_overrides(sim: Simulator, key_hex: str) -> dict[str, Any]:
    """Settings that point the daemon, live, at `sim` with `key_hex` (for the demo, tests and
    benchmarks): every venue URL, the key, and no credentials of a real wallet."""
    return {
        "mode": "live",
        "clob_host": sim.clob_url,
        "gamma_api_url": sim.gamma_url,
        "data_api_url": sim.data_url,
        "market_ws_url": sim.market_ws_url,
        "user_ws_url": sim.user_ws_url,
        "geoblock_url": sim.geoblock_url,
        "rpc_url": sim.rpc_url,
        "relayer_url": sim.relayer_url,
        "private_key": key_hex,
        # A real wallet's settings in the shell must never reach the simulator (or vice versa).
        "clob_api_key": None,
        "clob_api_secret": None,
        "clob_api_passphrase": None,
        "funder_address": None,
        "signature_type": 0,
        "chain_id": 137,
    }


def demo_overrides(sim: Simulator, key_hex: str, workdir: Path) -> dict[str, Any]:
    """Settings that point the daemon at the simulator with a throwaway key."""
    overrides: dict[str, Any] = {
        **simulator_overrides(sim, key_hex),
        "db_path": workdir / "polyd-demo.db",
        "control_token": secrets.token_urlsafe(24),
        "discovery_interval_s": 10.0,
        # Nothing of ours may rest (and fill) after the daemon stops: the ledger check at the
        # end compares the daemon's books with the venue's once both have stopped moving.
        "cancel_on_shutdown": True,
    }
    for write in RULE_WRITERS:
        overrides.update(write(sim, workdir))
    return overrides


def summarize(db_path: Path, database_url: str | None = None) -> dict[str, Any]:
    """Return orders by outcome and strategy, fills, positions and PnL from the demo database."""
    with Views.open(db_path, database_url) as reports:
        outcomes = reports.order_outcomes()
        fills = reports.fill_totals()
        positions = reports.positions()
        names = reports.names(p.token_id for p in positions)
    return {
        "orders": outcomes.by_outcome,
        "orders_by_strategy": outcomes.by_strategy,
        "fills": fills.count,
        "bought": str(fills.bought),
        "sold": str(fills.sold),
        "fees_paid": str(fills.fees),
        "positions": [
            {
                "strategy": p.strategy,
                "token_id": p.token_id,
                "market": names[p.token_id].label(50) if p.token_id in names else "",
                "size": str(p.size),
                "avg_cost": str(p.avg_cost),
            }
            for p in positions
            if p.size != 0
        ],
        "realized_pnl": str(sum((p.realized_pnl for p in positions), Decimal(0))),
    }


def print_summary(db_path: Path, database_url: str | None = None) -> None:
    """Print what the demo did, from its database (nothing if the daemon never wrote one)."""
    with contextlib.suppress(Exception):
        _print_summary(summarize(db_path, database_url))


def _print_summary(summary: dict[str, Any]) -> None:
    print("\n=== polyd demo summary ===")
    orders = summary["orders"]
    print("orders by outcome: " + (", ".join(f"{k}={v}" for k, v in orders.items()) or "none"))
    by_strategy = summary["orders_by_strategy"]
    print(
        "orders by strategy: " + (", ".join(f"{k}={v}" for k, v in by_strategy.items()) or "none")
    )
    print(f"fills: {summary['fills']} (bought {summary['bought']}, sold {summary['sold']} shares)")
    print(f"taker fees paid: {summary['fees_paid']} pUSD (in cost basis and PnL below)")
    for p in summary["positions"]:
        cost = Decimal(p["avg_cost"]).quantize(Decimal("0.0001"))
        what = p.get("market") or f"{p['token_id'][:12]}…"
        print(f"position {p['strategy']} {what}: {p['size']} @ {cost}")
    pnl = Decimal(summary["realized_pnl"]).quantize(Decimal("0.01"))
    print(f"realized PnL: {pnl} pUSD")


def operate(settings: Settings, *, port: int, env_file: Path = OPERATE_ENV) -> str:
    """Write the running demo's settings to `env_file` (mode 0600) and return the exact
    commands that operate it from a second terminal, and the web console's address.

    The commands name the four settings they need in the environment (`DB_PATH`, `HTTP_HOST`,
    `HTTP_PORT`, `CONTROL_TOKEN`; and `DATABASE_URL` on PostgreSQL, read back from `env_file`
    when it holds a password, so the password is never printed); `--demo` reads them from
    `env_file`, which also holds the demo's venue URLs, throwaway key and rule files, so
    `doctor --demo` checks the demo's account at the simulator. The token and the key are the
    demo's own, made for this run.
    """
    from cli import COMMANDS  # the operator commands this checkout has
    from credentials import write_private

    def secret(value: SecretStr | None) -> str:
        return value.get_secret_value() if value is not None else ""

    values = {
        "DB_PATH": str(settings.db_path.resolve()),
        "HTTP_HOST": settings.http_host,
        "HTTP_PORT": str(port),
        "CONTROL_TOKEN": secret(settings.control_token),
    }
    exports = [f"{k}={shlex.quote(v)}" for k, v in values.items()]
    url = settings.database_url
    if url:  # in the file (mode 0600) whole; the printed export reads it from there
        values["DATABASE_URL"] = url
        file = shlex.quote(str(env_file.resolve()))
        exports.append(
            f"DATABASE_URL=\"$(sed -n 's/^DATABASE_URL=//p' {file})\""
            if display_url(url) != url  # it holds a password: never printed
            else f"DATABASE_URL={shlex.quote(url)}"
        )
    rest = {name.upper(): getattr(settings, name) for name in DEMO_FILE_SETTINGS}
    rest["PRIVATE_KEY"] = secret(settings.private_key)
    for name in ("SNIPER_RULES_PATH", "COPY_RULES_PATH"):
        rest[name] = Path(rest[name]).resolve() if rest[name] is not None else ""
    lines = [f"{k}={v}\n" for k, v in {**values, **rest}.items()]
    write_private(env_file, "# written by the running demo (--demo reads it)\n" + "".join(lines))
    cwd = Path.cwd()
    python = Path(sys.executable)
    if python.is_relative_to(cwd):
        python = python.relative_to(cwd)
    run = f"{shlex.quote(str(python))} -m orchestrator"
    names = [c for c in OPERATE_COMMANDS if c in COMMANDS]
    return "\n".join(
        [
            f"=== operate this demo from a second terminal, in {shlex.quote(str(cwd))} ===",
            "export " + " ".join(exports),
            *(f"{run} {name}" for name in names),
            f"(or, without the export: {run} {names[0]} --demo)",
            f"web console: http://{settings.http_host}:{port}/ui/ (connect with the CONTROL_TOKEN"
            " above; docs/console.md)",
        ]
    )


def settle_settings(settings: Settings) -> Settings:
    """The settings of the demo's last pass: the same daemon with no strategy. Its start-up
    reconcile settles every journal row and fetches the fills matched since the last checkpoint,
    so a fill the user feed had not delivered when the daemon stopped is booked before the
    ledger check."""
    return settings.model_copy(update={"sniper_enabled": False, "copy_enabled": False})


def ledger_check(demo: Demo) -> LedgerCheck:
    """Compare the daemon's fills, fees and positions with the simulator's ledger for the demo
    wallet (call it once the daemon has stopped and booked its last fills)."""
    s = demo.settings
    return check(demo.sim.ledger(), s.db_path, address=demo.wallet, database_url=s.database_url)


@dataclass(frozen=True)
class Demo:
    """A prepared demo: the running simulator, the funded throwaway wallet, the settings."""

    sim: Simulator
    wallet: str
    settings: Settings

    def banner(self) -> dict[str, str]:
        """What the demo prints first (one JSON line): where it trades and where it writes."""
        return {
            "demo": "polyd live against the built-in simulator",
            "wallet": self.wallet,
            "collateral": str(DEMO_COLLATERAL),
            "clob_url": self.sim.clob_url,
            "db": describe(db_path=self.settings.db_path, database_url=self.settings.database_url),
        }


@contextlib.asynccontextmanager
async def prepared(workdir: Path = DEMO_DIR, *, speed: float = 1.0) -> AsyncIterator[Demo]:
    """Start the demo simulator, fund a throwaway key at it, write the rule files under a fresh
    `workdir`, and yield the settings that point the daemon at it; stop the simulator on exit.
    `speed` runs the scenario's makers, takers and whale that many times as often.

    Settings are never read from a `.env`: the demo must never pick up a real key. A bad
    setting raises `ConfigError`; another demo running in `workdir`, `AlreadyRunning`.
    """
    account = Account.create()
    key_hex = "0x" + bytes(account.key).hex()
    # `workdir` is wiped and reused: a second demo from the same checkout is refused (exit 3)
    # before it wipes the running one's database.
    lock = FileLock(workdir, what="the demo folder", hint="one demo at a time per folder")
    await lock.acquire()
    schema_lock: SchemaLock | None = None
    try:
        _fresh_dir(workdir)
        async with Simulator(
            seed=DEMO_SEED, scenario="demo", speed=speed, retention=DEMO_RETENTION
        ) as sim:
            sim.fund(account.address, collateral=DEMO_COLLATERAL)
            sim.chain.fund_pol(account.address, Decimal("10"))  # gas for redeem as an EOA
            # The demo wallet starts as one that approved once on polymarket.com: redemption's
            # approvals are set, so `doctor --demo` is all ✔ (test_doctor covers the ✖ case).
            for ap in redemption_approvals():
                sim.chain.approve_all(account.address, ap.operator, token=ap.token)
            settings = _settings(demo_overrides(sim, key_hex, workdir))
            if settings.database_url:  # PostgreSQL: a fresh schema of its own, as a fresh dir
                # The folder lock does not cover a demo from another checkout on the same
                # database: lock the schema (exit 3, naming the holder) before emptying it.
                schema_lock = SchemaLock(settings.database_url, DEMO_SCHEMA, what="the demo")
                await schema_lock.acquire()
                url = await asyncio.to_thread(recreate_schema, settings.database_url, DEMO_SCHEMA)
                settings = settings.model_copy(update={"database_url": url})
            yield Demo(sim=sim, wallet=account.address, settings=settings)
    finally:
        if schema_lock is not None:
            await schema_lock.release()
        await lock.release()


def _fresh_dir(workdir: Path) -> None:
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True, exist_ok=True)


def _settings(overrides: dict[str, Any]) -> Settings:
    settings = load_settings(env_file=None, **overrides)
    if settings.http_port == DEFAULT_PORT and not _port_free(DEFAULT_PORT):
        # Another daemon holds the usual port: take any free one (the demo prints where).
        settings = load_settings(env_file=None, **{**overrides, "http_port": 0})
    return settings

"""Run a command and measure how its memory grows: `python -m tools.rss_soak [options] -- CMD...`.

Samples the command's resident set (VmRSS in `/proc/<pid>/status`) every `--interval` seconds
until it exits (or `--seconds` pass, then it is sent SIGINT and given 60 s to finish), ignores the
first `--warmup` seconds (imports, first connections, caches filling), and fits a least-squares
line through the rest. Prints one JSON document: the slope in MB/hour, the RSS at the end of the
warm-up and at the end, the peak, how many samples, the command's exit code; `--samples FILE`
also writes every (seconds, MB) sample, one JSON line each.

    python -m tools.rss_soak --seconds 1800 --warmup 180 -- \\
        python -m orchestrator --demo --speed 10

The soak test (`tests/load/test_demo_soak.py`) calls `measure()` directly.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path


def rss_mb(pid: int) -> float | None:
    """The resident set of `pid` in MB (VmRSS), or None once it has gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


def slope_per_hour(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) samples, in MB per hour (0 for fewer than 2)."""
    n = len(samples)
    if n < 2:
        return 0.0
    mx = sum(t for t, _ in samples) / n
    my = sum(m for _, m in samples) / n
    sxx = sum((t - mx) ** 2 for t, _ in samples)
    if sxx == 0:
        return 0.0
    sxy = sum((t - mx) * (m - my) for t, m in samples)
    return sxy / sxx * 3600


@dataclass
class Soak:
    """What one measured run gave."""

    seconds: float
    warmup_s: float
    samples_after_warmup: int
    rss_mb_after_warmup: float
    rss_mb_end: float
    rss_mb_peak: float
    slope_mb_per_hour: float
    exit_code: int | None
    samples: list[tuple[float, float]] = field(default_factory=list, repr=False)

    def figures(self) -> dict[str, object]:
        d = asdict(self)
        del d["samples"]
        return {k: round(v, 2) if isinstance(v, float) else v for k, v in d.items()}


def measure(
    cmd: list[str],
    *,
    seconds: float,
    warmup_s: float,
    interval_s: float = 5.0,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    stdout: int | None = subprocess.DEVNULL,
) -> Soak:
    """Run `cmd`, sample its RSS every `interval_s` for up to `seconds` (then SIGINT it), and
    fit the growth after `warmup_s`. Raises ValueError if the warm-up leaves nothing to fit."""
    if not 0 <= warmup_s < seconds:
        raise ValueError(f"the warm-up ({warmup_s} s) must be shorter than the run ({seconds} s)")
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=stdout, stderr=subprocess.DEVNULL)
    start = time.monotonic()
    samples: list[tuple[float, float]] = []
    try:
        while proc.poll() is None and time.monotonic() - start < seconds:
            mb = rss_mb(proc.pid)
            if mb is not None:
                samples.append((time.monotonic() - start, mb))
            time.sleep(interval_s)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    kept = [(t, m) for t, m in samples if t >= warmup_s]
    if len(kept) < 2:
        raise ValueError(
            f"only {len(kept)} samples after the {warmup_s} s warm-up: the command ran "
            f"{samples[-1][0] if samples else 0:.0f} s (exit code {proc.returncode})"
        )
    return Soak(
        seconds=samples[-1][0],
        warmup_s=warmup_s,
        samples_after_warmup=len(kept),
        rss_mb_after_warmup=kept[0][1],
        rss_mb_end=kept[-1][1],
        rss_mb_peak=max(m for _, m in samples),
        slope_mb_per_hour=slope_per_hour(kept),
        exit_code=proc.returncode,
        samples=samples,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.rss_soak", description=__doc__)
    p.add_argument("--seconds", type=float, default=1800.0, help="run this long at most (1800)")
    p.add_argument("--warmup", type=float, default=180.0, help="ignore the first S seconds (180)")
    p.add_argument("--interval", type=float, default=5.0, help="sample every S seconds (5)")
    p.add_argument("--samples", type=Path, default=None, help="write every sample here (JSONL)")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- the command to run")
    args = p.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        p.error("name the command to run after --")
    try:
        soak = measure(cmd, seconds=args.seconds, warmup_s=args.warmup, interval_s=args.interval)
    except ValueError as e:
        print(f"rss_soak: {e}", file=sys.stderr)
        return 2
    if args.samples is not None:
        with args.samples.open("w") as out:
            for t, mb in soak.samples:
                out.write(json.dumps({"s": round(t, 1), "rss_mb": round(mb, 2)}) + "\n")
    print(json.dumps({"cmd": cmd, **soak.figures()}))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())

"""Forecast accuracy: the pilot's forecast of the rest of a teacher run vs what the run then did.

A real `python -m runner` Text2SQL run (WikiSQL, --rows rows: train + eval, gate.pilot_size=--pilot)
with the litellm provider against the loopback OpenAI-compatible server in a subprocess (its CPU
is not the client's). The server answers each attempt after a lognormal latency (--median, --p95,
drawn per (prompt, attempt)) and fails --fault-rate of attempts with an immediate 500 (retried by
the engine); the answer selects one of the question's columns, so answer lengths vary. Printed:
forecast, actual and error of the remaining part (forecast.<x>_error_pct, from metrics.json).
Target (issue 15): wall-time and token forecasts within 15 % of actual.

    python bench/forecast_accuracy.py                     # 1,000 rows, ~1-2 minutes
    python bench/forecast_accuracy.py --seeds 0 1 2       # one run per seed
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
_Z95 = 1.6448536269514722
_COLS = re.compile(r'"([^"]+)" [A-Z]+')


def serve(median: float, p95: float, fault_rate: float, seed: int) -> None:
    from tests.providers.openai_server import Action, LoopbackServer

    sigma = math.log(p95 / median) / _Z95

    def plan(prompt: str, attempt: int) -> Action:
        rng = random.Random(int(hashlib.sha256(f"{seed}|{prompt}|{attempt}".encode()).hexdigest()[:16], 16))
        if rng.random() < fault_rate:
            return Action("status", status=500)
        cols = _COLS.findall(prompt.split("\n", 1)[0]) or ["x"]
        return Action(delay_s=median * math.exp(sigma * rng.gauss(0, 1)),
                      text=f'SELECT "{rng.choice(cols)}" FROM t')

    with LoopbackServer(plan) as srv:
        print(f"PORT {srv.port}", flush=True)
        srv.thread.join()


def run_once(args, seed: int) -> dict:
    server = subprocess.Popen([sys.executable, __file__, "--serve", "--median", str(args.median), "--p95",
                               str(args.p95), "--fault-rate", str(args.fault_rate), "--seed", str(seed)],
                              stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline().split()[1])
        with tempfile.TemporaryDirectory() as tmp:
            n_eval = args.rows // 5
            cmd = [sys.executable, "-m", "runner", "+experiment=wikisql_smoke", "trainer=none",
                   f"dataset.n_train={args.rows - n_eval}", f"dataset.n_eval={n_eval}", f"seed={seed}",
                   f"gate.pilot_size={args.pilot}", "gate.min_gold_match_rate=0", "gate.min_judge_mean=0",
                   "provider=litellm", "provider.model=openai/loopback",
                   f"provider.api_base=http://127.0.0.1:{port}/v1", f"provider.concurrency={args.concurrency}",
                   "provider.backoff_base_s=0.2", "provider.backoff_max_s=2", "pipeline.stages.teacher.progress=false"]
            env = {**os.environ, "RUNNER_CACHE_DIR": str(Path(tmp) / "cache"),
                   "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
            proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=900)
            runs = sorted(Path(tmp, "outputs").glob("*/*/*/metrics.json"))
            if proc.returncode != 0 or not runs:
                raise SystemExit(f"run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
            return json.loads(runs[-1].read_text())
    finally:
        server.kill()
        server.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--pilot", type=int, default=50)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--median", type=float, default=0.3)
    ap.add_argument("--p95", type=float, default=0.9)
    ap.add_argument("--fault-rate", type=float, default=0.05)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        return serve(args.median, args.p95, args.fault_rate, args.seed)
    print(f"{args.rows} rows, pilot {args.pilot}, concurrency {args.concurrency}, latency lognormal median "
          f"{args.median} s / p95 {args.p95} s, {args.fault_rate:.0%} of attempts fail (500)")
    print(f"{'seed':>4} {'figure':<11} {'forecast':>12} {'actual':>12} {'error %':>8}")
    worst: dict[str, float] = {}
    for seed in args.seeds:
        m = run_once(args, seed)
        for k in ("requests", "tokens_in", "tokens_out", "wall_s"):
            f, a, e = m.get(f"forecast.{k}"), m.get(f"forecast.{k}_actual"), m.get(f"forecast.{k}_error_pct")
            print(f"{seed:>4} {k:<11} {f:>12.1f} {a:>12.1f} {e:>+8.1f}")
            worst[k] = max(worst.get(k, 0.0), abs(e))
        print(f"{seed:>4} wall: sliding window {m['forecast.wall_window_s']:.1f} s, client CPU bound "
              f"{m['forecast.wall_cpu_bound_s']:.1f} s, pilot latency p50 {m.get('teacher.latency_p50_s')}")
        print(f"{seed:>4} {'wall p10-p90':<11} {m['forecast.wall_p10_s']:>6.1f}-{m['forecast.wall_p90_s']:<5.1f}"
              f"   expected kept {m['forecast.expected_kept']} "
              f"[{m['forecast.expected_kept_lo']}, {m['forecast.expected_kept_hi']}] vs kept {m.get('filter.kept')}")
    ok = all(worst[k] <= 15 for k in ("tokens_in", "tokens_out", "wall_s"))
    print("worst |error|: " + ", ".join(f"{k} {v:.1f} %" for k, v in worst.items())
          + f"  -> target (wall, tokens within 15 %): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()

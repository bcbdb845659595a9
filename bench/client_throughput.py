"""Client throughput at high concurrency: litellm's path against the light OpenAI-compatible client.

Both paths of the same LiteLLMProvider (provider.client=litellm | http) send the same requests,
through the same engine and a fresh durable cache, to one loopback OpenAI-compatible server in its
own process (tests/providers/openai_server.py; its CPU is not the client's). Each prompt carries
its latency (`sleep=<s>`), drawn lognormal (median, p95) by the simulator's seeded model, so every
path faces the same latencies in the same order. Scenarios (issue 15, item 4):
  2,000 requests at concurrency 64 and 3,000 at concurrency 256, median 0.3 s.

Printed per scenario and client:
  wall (measured)        the engine's generation wall (teacher.generation_wall_s; the client's
                         import and warm-up are timed apart as setup_s)
  sum/C (computed)       sum(latency) / concurrency: no client can beat it on average
  bound (computed)       sum(latency) / concurrency + max(latency): the sliding-window bound
  perfect (computed)     greedy list scheduling of the draws: the best a client that cannot know
                         latencies in advance does
  p50 seen (measured)    median latency the engine observed per request (server sleeps median)
  CPU ms/request         this process's CPU (user + sys) during generate() / N
Targets: wall <= 1.1 x sum/C at C=64 (curator, as reported in the issue: 1.29x) and
wall <= 1.1 x bound at C=256.

    python bench/client_throughput.py                 # both scenarios, both clients (~2 min)
    python bench/client_throughput.py --scenarios 64:2000 --clients http
    python bench/client_throughput.py --curator-python /path/to/curator-venv/bin/python   # + curator

Curator is not a dependency; give it its own environment (it pins its own litellm and pandas):
    python -m venv /tmp/curator && /tmp/curator/bin/pip install bespokelabs-curator
It runs through bench/curator_client.py (tiktoken reads litellm's bundled encodings: no download);
its wall is measured around its call (import and setup apart); its p50 and CPU are not read (nan).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from teacher_throughput import REPO, perfect_window, start_server  # noqa: E402

from runner.engine import Request, generate  # noqa: E402


def latencies_for(n: int, median: float, p95: float, seed: int) -> list[float]:
    cfg = OmegaConf.load(REPO / "conf" / "provider" / "simulated.yaml")
    cfg.merge_with({"sim_seed": seed, "latency_median_s": median, "latency_p95_s": p95})
    sim = instantiate(cfg)
    reqs = [Request(id=str(i), messages=[{"role": "user", "content": f"request {i}"}]) for i in range(n)]
    return [sim.attempt_draws(sim.content_key(r), 1)[0] for r in reqs]


def run_client(client: str, api_base: str, lats: list[float], concurrency: int, cache: Path) -> dict:
    from runner.providers.litellm_provider import LiteLLMProvider

    provider = LiteLLMProvider("openai/loopback", api_base=api_base, concurrency=concurrency, max_retries=2,
                               timeout_s=60.0, client=client)
    # A distinct prompt per request and client: nothing is answered from another run's cache.
    reqs = [Request(id=str(i), messages=[{"role": "user", "content": f"{client} {i} sleep={lat:.6f}"}])
            for i, lat in enumerate(lats)]
    t0 = time.monotonic()
    provider.setup()  # import and warm-up, outside the CPU count (generate() times it apart too)
    setup = time.monotonic() - t0
    cpu0 = time.process_time()
    result = generate(provider, reqs, cache_dir=cache, progress=False)
    cpu = time.process_time() - cpu0
    if result.stats["errors"]:
        raise SystemExit(f"{client}: {result.stats['errors']} requests failed: {result.responses[0].error}")
    seen = [r.latency_s for r in result.responses if r.latency_s is not None]
    return {"wall": result.stats["wall_s"], "setup": setup, "cpu_ms": cpu * 1000 / len(reqs),
            "p50_seen": statistics.median(seen)}


def run_curator(python: str, api_base: str, lats: list[float], concurrency: int, tmp: Path) -> dict:
    """bench/curator_client.py in curator's own interpreter, on the same server and draws."""
    import json
    import subprocess

    path = tmp / f"latencies-{concurrency}.json"
    path.write_text(json.dumps(lats))
    proc = subprocess.run([python, str(Path(__file__).with_name("curator_client.py")), "--api-base", api_base,
                           "--concurrency", str(concurrency), "--latencies", str(path)],
                          capture_output=True, text=True)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    if proc.returncode or not lines:
        raise SystemExit(f"curator run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    r = json.loads(lines[-1])
    if r["errors"]:
        raise SystemExit(f"curator: {r['errors']} of {len(lats)} requests failed")
    return {"wall": r["wall"], "setup": float("nan"), "cpu_ms": float("nan"), "p50_seen": float("nan")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", default="64:2000,256:3000", help="concurrency:requests, comma separated")
    ap.add_argument("--clients", default="litellm,http")
    ap.add_argument("--median", type=float, default=0.3)
    ap.add_argument("--p95", type=float, default=0.9)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--curator-python", default=None,
                    help="an interpreter with bespokelabs-curator: adds curator's client, same server and draws")
    args = ap.parse_args()
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    server, api_base = start_server()
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="client-bench-") as tmp:
            for scenario in args.scenarios.split(","):
                conc, n = (int(x) for x in scenario.split(":"))
                lats = latencies_for(n, args.median, args.p95, args.seed)
                mean_c = sum(lats) / conc
                bound, perfect = mean_c + max(lats), perfect_window(lats, conc)
                print(f"\n{n} requests at concurrency {conc}: latency median {statistics.median(lats):.3f} s, "
                      f"max {max(lats):.2f} s; sum/C {mean_c:.2f} s, bound {bound:.2f} s, perfect {perfect:.2f} s "
                      "(computed)")
                clients = args.clients.split(",") + (["curator"] if args.curator_python else [])
                for client in clients:
                    if client == "curator":
                        r = run_curator(args.curator_python, api_base, lats, conc, Path(tmp))
                    else:
                        r = run_client(client, api_base, lats, conc, Path(tmp) / f"{client}-{conc}")
                    rows.append((conc, n, client, r, mean_c, bound, perfect))
                    print(f"  {client:8s} wall {r['wall']:6.2f} s (setup {r['setup']:.2f} s apart)  "
                          f"x sum/C {r['wall'] / mean_c:.3f}  x bound {r['wall'] / bound:.3f}  "
                          f"x perfect {r['wall'] / perfect:.3f}  p50 seen {r['p50_seen']:.3f} s  "
                          f"CPU {r['cpu_ms']:.2f} ms/request", flush=True)
    finally:
        server.kill()
        server.wait()
    print("\n| C | requests | client | wall s | × sum/C | × bound | × perfect | p50 seen s | CPU ms/req |")
    print("|---|---|---|---|---|---|---|---|---|")
    for conc, n, client, r, mean_c, bound, perfect in rows:
        print(f"| {conc} | {n} | {client} | {r['wall']:.2f} | {r['wall'] / mean_c:.3f} | {r['wall'] / bound:.3f} | "
              f"{r['wall'] / perfect:.3f} | {r['p50_seen']:.3f} | {r['cpu_ms']:.2f} |")


if __name__ == "__main__":
    main()

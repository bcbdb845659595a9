"""Teacher throughput: how close the engine gets to the best possible schedule.

N requests with lognormal latencies (median, p95) at concurrency C, sent
  (a) through the simulated provider (it sleeps the latencies in-process), and
  (b) through litellm to a loopback OpenAI-compatible server in a subprocess that sleeps
      the same latencies (each prompt carries its latency as `sleep=<s>`).
Both use the durable cache (a fresh directory, so every request is a miss) like a real run.

Printed per backend, all on the same latencies in the same dispatch order:
  wall (measured)      generation wall of generate() (teacher.generation_wall_s: provider
                       setup, i.e. client import and warm-up, is timed apart as setup_s)
  perfect window       COMPUTED from the latency draws: greedy list scheduling, each request
                       starts the instant a slot frees; the best an engine that cannot know
                       latencies in advance can do
  lower bound          COMPUTED: max(sum(latency) / C, max(latency))
  lock-step at C       the baseline at the SAME concurrency: batches of C requests sent together,
                       each waiting for its slowest. MEASURED through the same engine and provider
                       (one generate() call per batch; simulated backend) and COMPUTED
                       (sum over batches of max(latency in batch))
  CPU ms/request       process CPU time (user+sys) of this process during generate() / N
                       (the server's CPU is in its own process and not counted)
Targets (issue 3): wall <= 1.05 x perfect window; CPU <= 2 ms (simulated), <= 12 ms (litellm).

    python bench/teacher_throughput.py --n 1000 --concurrency 64 --median 1.0 --p95 3.0
"""
from __future__ import annotations

import argparse
import heapq
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import OmegaConf

from runner.engine import Request, generate

REPO = Path(__file__).resolve().parent.parent


def perfect_window(latencies: list[float], slots: int) -> float:
    free = [0.0] * min(slots, len(latencies))
    for lat in latencies:
        heapq.heappush(free, heapq.heappop(free) + lat)
    return max(free)


def lock_step(latencies: list[float], batch: int = 10) -> float:
    return sum(max(latencies[i:i + batch]) for i in range(0, len(latencies), batch))


def timed(provider, requests: list[Request], cache_dir: Path) -> tuple[float, float, dict]:
    """(generation wall, CPU s, stats): the engine's own generation wall, setup excluded."""
    cpu0 = time.process_time()
    result = generate(provider, requests, cache_dir=cache_dir, progress=False)
    cpu = time.process_time() - cpu0
    if result.stats["errors"]:
        raise SystemExit(f"{result.stats['errors']} requests failed: {result.responses[0].error}")
    print(f"  ({type(provider).__name__} setup, timed apart: {result.stats['setup_s']:.2f} s)")
    return result.stats["wall_s"], cpu, result.stats


def measured_lock_step(provider, requests: list[Request], cache_dir: Path, batch: int) -> float:
    """The lock-step baseline, run: batches of `batch` requests, each batch one generate() call
    that must finish before the next starts (what a batch-at-a-time client does)."""
    total = 0.0
    for i in range(0, len(requests), batch):
        total += generate(provider, requests[i:i + batch], cache_dir=cache_dir, progress=False).stats["wall_s"]
    return total


def report(name: str, wall: float, cpu: float, latencies: list[float], slots: int,
           lock_measured: float | None = None) -> None:
    n = len(latencies)
    perfect = perfect_window(latencies, slots)
    bound = max(sum(latencies) / slots, max(latencies))
    lock = lock_step(latencies, slots)
    print(f"\n[{name}] {n} requests, concurrency {slots}")
    print(f"  wall (measured)                {wall:8.2f} s")
    print(f"  perfect window (computed)      {perfect:8.2f} s   wall / perfect = {wall / perfect:.3f}")
    print(f"  lower bound (computed)         {bound:8.2f} s   wall / bound   = {wall / bound:.3f}")
    print(f"  lock-step at {slots} (computed)    {lock:8.2f} s   sliding window vs lock-step = {lock / wall:.2f}x")
    if lock_measured is not None:
        print(f"  lock-step at {slots} (measured)    {lock_measured:8.2f} s   sliding window vs lock-step = "
              f"{lock_measured / wall:.2f}x")
    print(f"  CPU (measured)                 {cpu * 1000 / n:8.3f} ms/request ({cpu:.2f} s total)")


def start_server() -> tuple[subprocess.Popen, str]:
    server = subprocess.Popen([sys.executable, "-m", "tests.providers.openai_server"], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    line = server.stdout.readline().split()
    if line[:1] != ["PORT"]:
        server.kill()
        raise SystemExit(f"loopback server did not start: {line}")
    return server, f"http://127.0.0.1:{line[1]}/v1"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--median", type=float, default=1.0)
    ap.add_argument("--p95", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", choices=["simulated", "litellm"], default=None)
    ap.add_argument("--no-lock-step-run", action="store_true",
                    help="skip the measured lock-step baseline (about N/C x the slowest latency of a batch)")
    args = ap.parse_args()

    cfg = OmegaConf.load(REPO / "conf" / "provider" / "simulated.yaml")
    cfg.merge_with({"sim_seed": args.seed, "concurrency": args.concurrency, "latency_median_s": args.median,
                    "latency_p95_s": args.p95, "rate_429": 0.0, "rate_5xx": 0.0, "rate_timeout": 0.0})
    sim = instantiate(cfg)
    meta = {"task": "yesno", "answer": True}
    base = [Request(id=str(i), messages=[{"role": "user", "content": f"request {i}"}], meta=meta)
            for i in range(args.n)]
    # The simulator's own latency draws (first attempt), reused by the loopback server.
    latencies = [sim.attempt_draws(sim.content_key(r), 1)[0] for r in base]
    print(f"latencies: median {sorted(latencies)[len(latencies) // 2]:.3f} s, "
          f"p95 {sorted(latencies)[int(0.95 * len(latencies))]:.3f} s, sum {sum(latencies):.1f} s")

    with tempfile.TemporaryDirectory(prefix="teacher-bench-") as tmp:
        if args.only in (None, "simulated"):
            wall, cpu, _ = timed(sim, base, Path(tmp) / "sim")
            lock = None if args.no_lock_step_run else measured_lock_step(sim, base, Path(tmp) / "sim-lock",
                                                                         args.concurrency)
            report("simulated", wall, cpu, latencies, args.concurrency, lock)
        if args.only in (None, "litellm"):
            os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
            from runner.providers.litellm_provider import LiteLLMProvider

            server, api_base = start_server()
            try:
                llm = LiteLLMProvider("openai/loopback", api_base=api_base, concurrency=args.concurrency,
                                      max_retries=0, timeout_s=60.0, client="litellm")
                reqs = [Request(id=r.id, messages=[{"role": "user", "content": f"request {r.id} sleep={lat:.6f}"}])
                        for r, lat in zip(base, latencies)]
                wall, cpu, _ = timed(llm, reqs, Path(tmp) / "litellm")
                report("litellm -> loopback HTTP", wall, cpu, latencies, args.concurrency)
            finally:
                server.kill()
                server.wait()


if __name__ == "__main__":
    main()

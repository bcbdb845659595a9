"""Curator's online OpenAI client on the loopback workload: the peer of bench/client_throughput.py.

Runs in an interpreter that has bespokelabs-curator (not a dependency of this project; install it
in its own virtual environment). bench/client_throughput.py --curator-python PATH starts it with
the same server and the same latency draws, and reads one JSON line back:

    {"wall": <s around curator's call>, "n": <answers>, "errors": <failed rows>}

`wall` includes what curator does around the HTTP calls in that call (its dataset, cache files and
progress tracking); curator's import and the LLM object's construction are outside it.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--api-base", required=True)
    ap.add_argument("--concurrency", type=int, required=True)
    ap.add_argument("--latencies", required=True, help="JSON file: a list of seconds, one per request")
    args = ap.parse_args()
    lats = json.load(open(args.latencies))
    with tempfile.TemporaryDirectory(prefix="curator-bench-") as cache:
        os.environ.update({"CURATOR_CACHE_DIR": cache, "TELEMETRY_ENABLED": "false", "CURATOR_DISABLE_CACHE": "true",
                           "OPENAI_API_KEY": "loopback-no-key"})
        # No internet here: tiktoken reads the encodings litellm ships instead of downloading them.
        import importlib.util

        litellm_dir = os.path.dirname(importlib.util.find_spec("litellm").origin)
        os.environ.setdefault("TIKTOKEN_CACHE_DIR", os.path.join(litellm_dir, "litellm_core_utils", "tokenizers"))
        from bespokelabs import curator

        class Loopback(curator.LLM):
            def prompt(self, row):
                return row["prompt"]

            def parse(self, row, response):
                return {"answer": response}

        llm = Loopback(model_name="gpt-4o-mini", backend="openai",
                       backend_params={"base_url": args.api_base, "max_concurrent_requests": args.concurrency,
                                       "max_requests_per_minute": 10_000_000, "max_tokens_per_minute": 10_000_000_000,
                                       "max_retries": 2, "require_all_responses": False})
        rows = [{"prompt": f"curator {i} sleep={lat:.6f}"} for i, lat in enumerate(lats)]
        t0 = time.monotonic()
        out = llm(rows)
        wall = time.monotonic() - t0
        answers = out.dataset if hasattr(out, "dataset") else out
        n = len(answers)
    print(json.dumps({"wall": wall, "n": n, "errors": len(lats) - n}), flush=True)


if __name__ == "__main__":
    main()

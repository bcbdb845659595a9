"""`python -m runner.data wikisql [--url URL] [--dest DIR] [--force]`."""
from __future__ import annotations

import argparse
import os
import sys

from runner.data import WIKISQL_URL, DownloadError, download_wikisql


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner.data", description="Download datasets.")
    sub = parser.add_subparsers(dest="dataset", required=True)
    wiki = sub.add_parser("wikisql", help="the official WikiSQL archive (data.tar.bz2, ~26 MB)")
    wiki.add_argument("--url", default=WIKISQL_URL, help=f"archive URL (default {WIKISQL_URL})")
    wiki.add_argument("--dest", default=os.environ.get("RUNNER_DATA_DIR") or "data",
                      help="data root; files land in DEST/wikisql/data/ (default $RUNNER_DATA_DIR or ./data)")
    wiki.add_argument("--force", action="store_true", help="replace an existing DEST/wikisql/data/")
    wiki.add_argument("--timeout", type=float, default=60.0, help="network timeout in seconds")
    args = parser.parse_args(argv)
    try:
        target = download_wikisql(args.dest, args.url, force=args.force, timeout_s=args.timeout)
    except DownloadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    root = target.parent.parent
    print(f"WikiSQL is in {target}. Use it with: RUNNER_DATA_DIR={root} "
          f"(or dataset.data_dir={root}) dataset.source=official")
    return 0


if __name__ == "__main__":
    sys.exit(main())

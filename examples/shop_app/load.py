"""A tiny load generator for the shop app.

    python -m examples.shop_app.load --url http://127.0.0.1:8000 --requests 200 --concurrency 4
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

PATHS = [
    (50, lambda: "/products"),
    (30, lambda: f"/products/{random.randint(1, 25)}"),  # some 404s
    (10, lambda: f"/customers/{random.randint(1, 5)}/orders"),
    (3, lambda: "/slow"),
    (3, lambda: "/fail"),
    (4, lambda: f"/no/such/page/{random.randint(1, 10**6)}"),
]


def hit(base: str, path: str) -> int:
    try:
        with urllib.request.urlopen(base + path, timeout=30) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    if args.requests < 1 or args.concurrency < 1:
        parser.error("--requests and --concurrency must be at least 1")
    rng = random.Random(args.seed)
    weights = [w for w, _ in PATHS]
    paths = [rng.choices(PATHS, weights)[0][1]() for _ in range(args.requests)]
    start = time.perf_counter()
    with ThreadPoolExecutor(args.concurrency) as pool:
        statuses = Counter(pool.map(lambda p: hit(args.url.rstrip("/"), p), paths))
    elapsed = time.perf_counter() - start
    print(f"{args.requests} requests in {elapsed:.1f} s; statuses: {dict(sorted(statuses.items()))}")
    return 0 if statuses.get(0, 0) == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""End-to-end view benchmark: wrk against the Swift shop and the same views in Django, same run.

    views.py --seconds 10 view-product view-dashboard

Reads the targets' base URLs from the environment Integration/bench.sh sets (SHOP_URL, SHOP_NEAR_URL,
DJANGO_ASYNC_URL, DJANGO_SYNC_URL) and prints one JSON line per scenario:

    view-product:   tandem = /product/1 on the shop (a warm Redis read through getOrSet);
                    reference = the faster Django deployment (async views on uvicorn, sync on gunicorn);
                    ratio_floor = tandem / /product-nocache/1 (the same Hummingbird route with no cache).
    view-product-near: the same, on a second shop whose Redis cache keeps a near cache
                    (OPTIONS.NEAR_CACHE): the product is read from process memory.
    view-dashboard: tandem = /dashboard (five upstream calls fanned out, one part cached);
                    reference = the faster Django deployment; ratio_peer = tandem / /dashboard-ahc
                    (the same view with async-http-client doing the calls).

Each target gets a 2 s warm-up, then `wrk -t2 -c64 -d<seconds>s --latency`. Requests per second,
p99 latency and the count of non-2xx answers and socket errors are reported for every target.
"""
import argparse
import json
import os
import re
import subprocess
import sys


def wrk(url, seconds, connections=64):
    subprocess.run(["wrk", "-t2", f"-c{connections}", "-d2s", url], capture_output=True, text=True, timeout=60)
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url],
                         capture_output=True, text=True, timeout=seconds + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"\s99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 1, "ms": 1000, "s": 1_000_000}
    p99_us = float(p99.group(1)) * scale[p99.group(2)] if p99 else None
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "rps": rps,
        "p99_us": p99_us,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(int(x) for x in errors.groups()) if errors else 0,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("scenarios", nargs="+")
    args = ap.parse_args()
    shop, dj_async, dj_sync = os.environ["SHOP_URL"], os.environ["DJANGO_ASYNC_URL"], os.environ["DJANGO_SYNC_URL"]
    plans = {
        "view-product": {
            "tandem": f"{shop}/product/1", "floor": f"{shop}/product-nocache/1",
            "django-async": f"{dj_async}/product-async/1", "django-sync": f"{dj_sync}/product/1",
        },
        "view-product-near": {
            "tandem": f"{os.environ['SHOP_NEAR_URL']}/product/1", "floor": f"{shop}/product-nocache/1",
            "django-async": f"{dj_async}/product-async/1", "django-sync": f"{dj_sync}/product/1",
        },
        "view-dashboard": {
            "tandem": f"{shop}/dashboard", "peer": f"{shop}/dashboard-ahc",
            "django-async": f"{dj_async}/dashboard-async", "django-sync": f"{dj_sync}/dashboard",
        },
    }
    for scenario in args.scenarios:
        if scenario not in plans:
            sys.exit(f"unknown scenario {scenario!r} (view-product, view-product-near, view-dashboard)")
        runs = {name: wrk(url, args.seconds) for name, url in plans[scenario].items()}
        ref_name = max(["django-async", "django-sync"], key=lambda n: runs[n]["rps"])
        tandem, ref = runs["tandem"], runs[ref_name]
        line = {
            "scenario": scenario, "unit": "requests/s", "better": "higher",
            "tandem": round(tandem["rps"], 1), "reference": round(ref["rps"], 1), "reference_name": ref_name,
            "ratio": tandem["rps"] / ref["rps"] if ref["rps"] else None,
            "p99_us": tandem["p99_us"], "reference_p99_us": ref["p99_us"],
            "runs": runs,
            "non_2xx": sum(r["non_2xx"] for n, r in runs.items() if not n.startswith("django")),
        }
        if scenario in ("view-product", "view-product-near"):
            line["floor"] = round(runs["floor"]["rps"], 1)
            line["ratio_floor"] = tandem["rps"] / runs["floor"]["rps"]
        else:
            line["peer"] = round(runs["peer"]["rps"], 1)
            line["ratio_peer"] = tandem["rps"] / runs["peer"]["rps"]
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()

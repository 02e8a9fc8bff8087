#!/usr/bin/env python3
"""Turns the JSON lines of Integration/bench.sh into SVG charts (issue 34).

    python3 Integration/charts.py RESULTS.jsonl [MORE.jsonl ...] --out charts/

One chart per family of scenarios found in the files (a family with no line is skipped):

  views.svg       the example shop's views against Django (async and sync) and the floor or the peer
  gets.svg        Redis and memcached GETs: rate and client CPU per GET, Tandem against its reference
  fanout.svg      the fan-out's wall time against its floor (the slowest call) or its peer
  near-cache.svg  near-cache hits against the same reads over the network
  ratios.svg      every scenario's ratio to its reference, with the bar at 1 and the better side

When a scenario appears more than once (several runs), the chart shows the median of its runs and
says how many there were. The SVGs are written without dates or random ids, so that the same figures
give the same files.
"""
import argparse
import json
import statistics
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

plt.rcParams["svg.hashsalt"] = "tandem"
plt.rcParams["svg.fonttype"] = "none"
plt.rcParams["font.size"] = 9

TANDEM = "#2f6f9f"
REFERENCE = "#b0b0b0"
OTHERS = ["#d08c3a", "#7a9a4a", "#8a6aa8"]


def load(paths):
    """Lines by scenario, in the order first seen."""
    runs = {}
    for path in paths:
        for n, raw in enumerate(Path(path).read_text().splitlines(), 1):
            raw = raw.strip()
            if not raw.startswith("{"):
                continue  # bench.sh prints its progress on stderr, but a tee'd log may hold other lines
            try:
                line = json.loads(raw)
            except json.JSONDecodeError as e:
                sys.exit(f"{path}:{n}: not a JSON line: {e}")
            if "scenario" not in line:
                sys.exit(f"{path}:{n}: a line without a scenario")
            runs.setdefault(line["scenario"], []).append(line)
    return runs


def median(lines, key):
    values = [l[key] for l in lines if isinstance(l.get(key), (int, float))]
    return statistics.median(values) if values else None


def rate(lines, side):
    """Operations per second of one side: the value itself, or 1 / seconds per operation."""
    v = median(lines, side)
    if v is None:
        return None
    return v if lines[0].get("unit") != "s" else (1 / v if v > 0 else None)


def runs_note(lines):
    return f" ({len(lines)} runs, median)" if len(lines) > 1 else ""


FORMAT = "svg"


def save(fig, out, name):
    fig.tight_layout()
    path = out / name.replace(".svg", "." + FORMAT)
    fig.savefig(path, format=FORMAT, metadata={"Date": None, "Creator": None} if FORMAT == "svg" else None)
    plt.close(fig)
    print(f"wrote {path}")


def bars(ax, labels, series, unit):
    """Grouped horizontal bars: `series` is [(name, colour, [value or None per label])]."""
    height = 0.8 / len(series)
    for i, (name, colour, values) in enumerate(series):
        ys = [j + i * height for j in range(len(labels))]
        vals = [v or 0 for v in values]
        ax.barh(ys, vals, height=height, color=colour, label=name)
        for y, v in zip(ys, values):
            if v:
                ax.text(v, y, f" {v:,.0f}" if v >= 100 else f" {v:.1f}", va="center", fontsize=7)
    ax.set_yticks([j + 0.4 - height / 2 for j in range(len(labels))])
    ax.set_yticklabels(labels)
    ax.invert_yaxis()
    ax.set_xlabel(unit)
    ax.xaxis.set_major_formatter(FuncFormatter(short))
    ax.margins(x=0.15)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, fontsize=7, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)


def short(v, _pos=None):
    """Axis numbers: 250k, 1.5M."""
    if abs(v) >= 1e6:
        return f"{v / 1e6:g}M"
    if abs(v) >= 1e3:
        return f"{v / 1e3:g}k"
    return f"{v:g}"


def views_chart(runs, out):
    names = [s for s in ("view-product", "view-dashboard") if s in runs]
    if not names:
        return
    sides = [("tandem", "Tandem (Hummingbird)", TANDEM), ("floor", "no cache, no database (floor)", OTHERS[1]),
             ("peer", "same view on async-http-client", OTHERS[2]),
             ("django-async", "Django async (uvicorn)", OTHERS[0]), ("django-sync", "Django sync (gunicorn)", REFERENCE)]
    series = []
    for key, label, colour in sides:
        values = []
        for s in names:
            rps = [l["runs"][key]["rps"] for l in runs[s] if key in l.get("runs", {})]
            values.append(statistics.median(rps) if rps else None)
        if any(values):
            series.append((label, colour, values))
    fig, ax = plt.subplots(figsize=(7, 1.8 + 1.1 * len(names)))
    bars(ax, [s + runs_note(runs[s]) for s in names], series, "requests per second (wrk, 64 connections)")
    ax.set_title("The example shop's views against the same views in Django 5.2")
    save(fig, out, "views.svg")


def gets_chart(runs, out):
    names = [s for s in ("redis-sync-get", "redis-async-get", "memcached-sync-get", "memcached-async-get") if s in runs]
    if not names:
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 2 + 0.9 * len(names)))
    labels = [s + (" (one thread)" if "sync" in s and "async" not in s else " (64 tasks)") + runs_note(runs[s]) for s in names]
    bars(left, labels, [("Tandem", TANDEM, [rate(runs[s], "tandem") for s in names]),
                        ("reference (C client)", REFERENCE, [rate(runs[s], "reference") for s in names])], "GETs per second")
    left.set_title("Rate")
    cpu = [("Tandem", TANDEM, [median(runs[s], "cpu_us_per_op") for s in names]),
           ("reference", REFERENCE, [median(runs[s], "reference_cpu_us_per_op") for s in names])]
    if any(v for _, _, vs in cpu for v in vs):
        bars(right, labels, cpu, "client CPU per GET (us)")
        right.set_title("CPU per GET (where measured)")
    else:
        right.axis("off")
    fig.suptitle("Redis and memcached GETs, Tandem against the strongest reference in the same run")
    save(fig, out, "gets.svg")


def fanout_chart(runs, out):
    names = [s for s in ("http-fanout-delay", "hedged-fanout") if s in runs]
    if not names:
        return
    fig, ax = plt.subplots(figsize=(7, 1.8 + 0.9 * len(names)))
    bars(ax, [s + runs_note(runs[s]) for s in names],
         [("Tandem", TANDEM, [(median(runs[s], "tandem") or 0) * 1000 for s in names]),
          ("reference: " + (runs[names[0]][0].get("reference_name") or "the slowest call"), REFERENCE,
           [(median(runs[s], "reference") or 0) * 1000 for s in names])], "wall time of the page's calls (ms)")
    ax.set_title("Fan-out of 100 calls of 50 ms: a page costs its slowest call, not the sum")
    save(fig, out, "fanout.svg")


def near_cache_chart(runs, out):
    if "near-cache-get" not in runs:
        return
    lines = runs["near-cache-get"]
    fig, ax = plt.subplots(figsize=(7, 2.4))
    bars(ax, ["near-cache-get" + runs_note(lines)],
         [("hits from the near cache", TANDEM, [median(lines, "tandem")]),
          ("the same reads from Redis", REFERENCE, [median(lines, "reference")])], "reads per second (64 tasks)")
    ax.set_title("Redis near cache: hot keys from process memory")
    save(fig, out, "near-cache.svg")


def ratios_chart(runs, out):
    names = [s for s, lines in runs.items() if median(lines, "ratio")]
    if not names:
        return
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.3 * len(names)))
    ratios = [median(runs[s], "ratio") for s in names]
    colours = []
    for s, r in zip(names, ratios):
        higher = runs[s][0].get("better", "higher") == "higher"
        colours.append(TANDEM if (r >= 1) == higher else OTHERS[0])
    # Bars grow from 1 (the reference) to the ratio, either way, on a log scale.
    ax.barh(range(len(names)), [abs(r - 1) for r in ratios], left=[min(r, 1) for r in ratios], color=colours)
    ax.axvline(1, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels([f"{s} ({'higher' if runs[s][0].get('better', 'higher') == 'higher' else 'lower'} is better)"
                        for s in names])
    ax.invert_yaxis()
    for y, r in enumerate(ratios):
        ax.text(max(r, 1), y, f" {r:.3g}", va="center", fontsize=7)
    ax.set_xlabel("Tandem / reference (log scale); blue: Tandem on the better side of 1")
    ax.set_title("Every scenario of the run")
    ax.spines[["top", "right"]].set_visible(False)
    save(fig, out, "ratios.svg")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", nargs="+", help="files of JSON lines from Integration/bench.sh")
    ap.add_argument("--out", default="charts", help="folder for the SVGs (made if missing)")
    ap.add_argument("--format", default="svg", choices=["svg", "png"], help="png: to look at them where SVG is not shown")
    args = ap.parse_args()
    global FORMAT
    FORMAT = args.format
    runs = load(args.results)
    if not runs:
        sys.exit("no benchmark lines in " + ", ".join(args.results))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for chart in (views_chart, gets_chart, fanout_chart, near_cache_chart, ratios_chart):
        chart(runs, out)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Reads the wrk outputs of bench/run.sh (SCENARIO__SIDE.RUN.txt.wrk) and prints, per scenario,
the median run of each side and the ratio of the medians (second side / first side), with the
goal of issue #11. Exits 1 when any run answered something other than 2xx/3xx, except the 404
scenario's unknown path, which must answer 404 (wrk counts those as non-2xx)."""
import pathlib
import sys

from summarize import parse

# scenario: (first side, second side, goal text, goal check on second/first)
GOALS = {
    "get": ("naive", "ours", ">= 1.3x", lambda r: r >= 1.3),
    "list_first": ("naive", "ours", ">= 2x", lambda r: r >= 2.0),
    "create": ("naive", "ours", ">= 1.0x", lambda r: r >= 1.0),
    "patch": ("naive", "ours", ">= 0.8x", lambda r: r >= 0.8),
    "deep": ("first", "deep", "deep no worse than 5x slower (>= 0.2x)", lambda r: r >= 0.2),
    "next": ("first", "next", "no worse than 2x slower (>= 0.5x)", lambda r: r >= 0.5),
    "not_found": ("get", "404", ">= 1x", lambda r: r >= 1.0),
}


def main() -> None:
    out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results")
    runs: dict[tuple[str, str], list[dict]] = {}
    for f in sorted(out.glob("*__*.txt.wrk")):
        scenario, side = f.name.split(".")[0].split("__")
        runs.setdefault((scenario, side), []).append(parse(f))
    print("| scenario | A | A req/s | B | B req/s | B/A | goal | met | p99 ms A / B | runs A / B (req/s) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    failed = False
    for scenario, (a, b, goal, ok) in GOALS.items():
        ra, rb = runs.get((scenario, a)), runs.get((scenario, b))
        if not ra or not rb:
            continue
        for side, rs in ((a, ra), (b, rb)):
            if side != "404" and sum(r["non2xx"] for r in rs):
                failed = True
                print(f"<!-- {scenario} {side}: non-2xx answers -->")
        ma, mb = (sorted(rs, key=lambda r: r["rps"])[len(rs) // 2] for rs in (ra, rb))
        ratio = mb["rps"] / ma["rps"]
        spread = lambda rs: " / ".join(f"{r['rps']:,.0f}" for r in rs)
        print(f"| {scenario} | {a} | {ma['rps']:,.0f} | {b} | {mb['rps']:,.0f} | {ratio:.2f}x | {goal} | "
              f"{'yes' if ok(ratio) else 'no'} | {ma['p99']:.1f} / {mb['p99']:.1f} | {spread(ra)} ; {spread(rb)} |")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

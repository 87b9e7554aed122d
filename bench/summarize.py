#!/usr/bin/env python3
"""Reads the wrk outputs of bench/run.sh and prints the median run of each scenario."""
import pathlib
import re
import statistics
import sys

def ms(value: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", value)
    n, unit = float(m.group(1)), m.group(2)
    return n / 1000 if unit == "us" else n * 1000 if unit == "s" else n


def parse(path: pathlib.Path) -> dict:
    text = path.read_text()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    p50 = ms(re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1))
    p99 = ms(re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1))
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errors = re.search(r"Socket errors:.*", text)
    return {"rps": rps, "p50": p50, "p99": p99, "non2xx": int(bad.group(1)) if bad else 0,
            "socket": errors.group(0) if errors else ""}


def main() -> None:
    out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results")
    scenarios: dict[str, list[dict]] = {}
    for f in sorted(out.glob("*.txt.wrk")):
        scenarios.setdefault(f.name.split(".")[0], []).append(parse(f))

    print("| scenario | runs | req/s (median) | p50 ms | p99 ms | non-2xx |")
    print("|---|---|---|---|---|---|")
    failed = False
    for name, runs in scenarios.items():
        runs.sort(key=lambda r: r["rps"])
        median = runs[len(runs) // 2]
        non2xx = sum(r["non2xx"] for r in runs)
        failed |= non2xx > 0
        print(f"| {name} | {len(runs)} | {median['rps']:,.0f} | {median['p50']:.2f} | {median['p99']:.2f} | {non2xx} |")
        spread = [round(r["rps"]) for r in runs]
        print(f"<!-- {name} runs req/s: {spread} -->", file=sys.stderr)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The table of bench/hostile.sh: tenant B quiet against tenant B beside a hostile tenant.

    python3 bench/hostile_summary.py bench/results/hostile <server VmHWM in kB>
"""
import json
import os
import pathlib
import statistics
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from summarize import parse  # noqa: E402  (the wrk output parser of bench/run.sh)

out = pathlib.Path(sys.argv[1])
hwm_kb = int(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2].isdigit() else 0


def runs(kind: str) -> list:
    return [parse(f) for f in sorted(out.glob(f"{kind}.*.txt.wrk"))]


quiet, hostile = runs("quiet"), runs("hostile")
q_rps = statistics.median(r["rps"] for r in quiet)
h_rps = statistics.median(r["rps"] for r in hostile)
q_p99 = statistics.median(r["p99"] for r in quiet)
h_p99 = statistics.median(r["p99"] for r in hostile)
b_errors = sum(r["non2xx"] for r in quiet + hostile)
socket = [r["socket"] for r in quiet + hostile if r["socket"]]
monitor = json.loads((out / "monitor.json").read_text())

attacks: dict = {}
attacker_cpu = []
for f in sorted(out.glob("attacks.*.json")):
    report = json.loads(f.read_text())
    attacker_cpu.append(report["cpu_seconds"])
    for name, row in report["counts"].items():
        total = attacks.setdefault(name, {})
        for k, v in row.items():
            total[k] = total.get(k, 0) + v

ratio = h_rps / q_rps if q_rps else 0
print("| tenant B (GET 70% / list 15% / create 15%) | quiet | beside the hostile tenant |")
print("|---|---|---|")
print(f"| req/s (median of {len(quiet)}) | {q_rps:,.0f} | {h_rps:,.0f} ({ratio:.0%} of quiet) |")
print(f"| p99 ms (median) | {q_p99:.1f} | {h_p99:.1f} |")
def spread(rs: list) -> str:
    return " / ".join(f"{r['rps']:,.0f}" for r in rs)


print(f"| runs req/s | {spread(quiet)} | {spread(hostile)} |")
print(f"| B's non-2xx answers | {sum(r['non2xx'] for r in quiet)} | {sum(r['non2xx'] for r in hostile)} |")
print()
print(f"Server peak RSS: {max(hwm_kb, monitor['rss_max_kb']) / 1024:.1f} MiB (VmHWM {hwm_kb / 1024:.1f} MiB, "
      f"largest VmRSS sampled {monitor['rss_max_kb'] / 1024:.1f} MiB). /health: "
      f"{monitor['health_checks']} checks, {monitor['health_not_200']} not 200, slowest "
      f"{monitor['health_max_ms']:.0f} ms.")
duration = float(os.environ.get("DURATION", "20"))
print(f"The attacker's own CPU per hostile run, on the same machine: "
      f"{' / '.join(f'{c:.1f}' for c in attacker_cpu)} CPU-seconds in {duration:.0f} s runs "
      f"(the machine has {os.cpu_count()} cores).")
if socket:
    print("Socket errors seen by wrk: " + "; ".join(socket))
print()
print("| attack (tenant A) | 2xx | 4xx but 429 | 429 | 503 | other 5xx | no answer |")
print("|---|---|---|---|---|---|---|")
for name, row in attacks.items():
    print(f"| {name} | {row['2xx']} | {row['4xx']} | {row['429']} | {row['503']} | {row['5xx']} | {row['error']} |")
ok = (ratio >= 0.7 and b_errors == 0 and monitor["health_not_200"] == 0
      and max(hwm_kb, monitor["rss_max_kb"]) < 256 * 1024
      and all(row["5xx"] == 0 for row in attacks.values()))
print()
print("Goals (B keeps >= 70% with zero errors, peak RSS < 256 MiB, /health always 200, no attack "
      f"answered 5xx other than 503): {'met' if ok else 'NOT met'}")

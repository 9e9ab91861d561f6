#!/usr/bin/env python3
"""ncu-summary.py: per-kernel totals from `ncu --csv --metrics gpu__time_duration.sum,
dram__bytes_read.sum` output (stdin): launches, mean duration, share of the time, and the DRAM read
rate of each kernel (by name and grid), longest first. Used by tools/device-run.sh (step ncu)."""
import csv
import sys
from collections import defaultdict

rows = [r for r in csv.reader(l for l in sys.stdin if l.startswith('"'))]
if not rows:
    sys.exit("no ncu rows")
hdr, data = rows[0], rows[1:]
col = {n: i for i, n in enumerate(hdr)}
per = defaultdict(lambda: defaultdict(float))
for r in data:
    name = r[col["Kernel Name"]].split("(")[0][:48]
    key = (name, r[col["Grid Size"]], r[col["Block Size"]])
    unit = r[col["Metric Unit"]]
    val = float(r[col["Metric Value"]].replace(",", "") or 0)
    if r[col["Metric Name"]] == "gpu__time_duration.sum":
        per[key]["ns"] += val * (1e3 if unit == "usecond" else 1e6 if unit == "msecond" else 1)
        per[key]["n"] += 1
    else:
        per[key]["bytes"] += val * {"byte": 1, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9}.get(unit, 1)
total = sum(v["ns"] for v in per.values())
print(f"{'kernel':48} {'grid':>14} {'blk':>9} {'calls':>6} {'us/call':>8} {'share':>6} {'GB/s':>7}")
for key, v in sorted(per.items(), key=lambda kv: -kv[1]["ns"])[:40]:
    n = max(v["n"], 1)
    gbs = v["bytes"] / v["ns"] if v["ns"] else 0
    print(f"{key[0]:48} {key[1]:>14} {key[2]:>9} {int(n):6d} {v['ns'] / n / 1e3:8.2f} "
          f"{100 * v['ns'] / total:5.1f}% {gbs:7.0f}")
print(f"total {total / 1e3:.1f} us over {sum(int(v['n']) for v in per.values())} launches")

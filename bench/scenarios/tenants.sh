#!/usr/bin/env bash
# Tenants, as in KumoScale's demonstration: 1, 2, 4, 8 volumes, each with its own host
# connection running the same workload at once (4 KiB random reads at QD QD, default 4).
# Total throughput should scale until the target's core saturates; from there the tenants
# share it evenly (per-tenant IOPS within a few percent of each other) while p99 grows
# with the queueing. Target pinned to core 0, every tenant's generator to core 1.
# Writes OUT/tenants-N-K.json per tenant, OUT/tenants.txt (table) and OUT/tenants.svg.
#
#   cargo build --release -p fabriq-bench -p fabriq-target
#   bash bench/scenarios/tenants.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-bench-results/tenants}
BIN=build/release
. bench/scenarios/lib.sh
QD=${QD:-4}
RUNTIME=${RUNTIME:-10s}
mkdir -p "$OUT"
start_target bench/scenarios/tenants-target.toml "$OUT/target.log" 0
for n in 1 2 4 8; do
  pids=()
  for k in $(seq "$n"); do
    taskset -c 1 "$BIN/fabriq-bench" run --target tcp://127.0.0.1:4420 --nqn "nqn.2026-11.dev.fabriq:tenant$k" \
      --target-pid $TARGET --rw randread --bs 4k --iodepth "$QD" --runtime "$RUNTIME" --ramp 2s \
      --no-progress --json "$OUT/tenants-$n-$k.json" >/dev/null &
    pids+=($!)
  done
  wait "${pids[@]}"
done
python3 - "$OUT" "$QD" <<'PY'
import json, sys, glob, os
out, qd = sys.argv[1], int(sys.argv[2])
rows = []
for n in (1, 2, 4, 8):
    runs = [json.load(open(f)) for f in sorted(glob.glob(f"{out}/tenants-{n}-*.json"))]
    iops = [r["results"]["iops"] for r in runs]
    p99 = [r["results"]["lat"]["p99_us"] for r in runs]
    cpu = max(r["cpu"]["target"]["cpu_pct"] for r in runs)
    rows.append((n, min(iops), sum(iops) / len(iops), sum(iops), max(p99), cpu))
with open(f"{out}/tenants.txt", "w") as f:
    f.write(f"tenants  per-tenant IOPS min / mean   total IOPS   worst p99 us   target CPU %   (4 KiB random reads, QD {qd} each)\n")
    for n, lo, mean, tot, p99, cpu in rows:
        f.write(f"{n:7}  {lo:14,.0f} / {mean:9,.0f}  {tot:11,.0f}  {p99:13.1f}  {cpu:12.0f}\n")
print(open(f"{out}/tenants.txt").read())
# A small SVG: total and per-tenant IOPS, and worst p99, against the number of tenants.
W, H, L, B = 640, 360, 70, 50
xs = [L + i * (W - L - 30) / 3 for i in range(4)]
top = max(r[3] for r in rows) * 1.1
pmax = max(r[4] for r in rows) * 1.3
y = lambda v, m: H - B - v / m * (H - B - 30)
def line(vals, m, colour):
    pts = " ".join(f"{x:.0f},{y(v, m):.0f}" for x, v in zip(xs, vals))
    return f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{pts}"/>' + "".join(
        f'<circle cx="{x:.0f}" cy="{y(v, m):.0f}" r="3" fill="{colour}"/>' for x, v in zip(xs, vals))
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<line x1="{L}" y1="{H-B}" x2="{W-20}" y2="{H-B}" stroke="black"/><line x1="{L}" y1="20" x2="{L}" y2="{H-B}" stroke="black"/>',
       line([r[3] for r in rows], top, "#1f77b4"), line([r[2] for r in rows], top, "#2ca02c"), line([r[4] for r in rows], pmax, "#d62728")]
for x, r in zip(xs, rows):
    svg.append(f'<text x="{x:.0f}" y="{H-B+18}" text-anchor="middle">{r[0]}</text>')
svg.append(f'<text x="{(W+L)/2:.0f}" y="{H-8}" text-anchor="middle">tenants (volumes, one host connection each)</text>')
svg.append(f'<text x="10" y="14">IOPS: total (blue, max {top/1.1:,.0f}), per tenant (green); worst p99 (red, max {pmax/1.3:.0f} us)</text>')
svg.append("</svg>")
open(f"{out}/tenants.svg", "w").write("\n".join(svg))
PY

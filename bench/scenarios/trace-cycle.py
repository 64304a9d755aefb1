#!/usr/bin/env python3
"""Where a fabriq-target I/O cycle spends its time, from kernel tracepoints.

Reads the text of `perf script` over a recording of

    block:block_rq_issue, block:block_rq_complete,
    io_uring:io_uring_submit_req, io_uring:io_uring_complete

(all CPUs), and prints, for one block device and the target's reactor threads
(`fabriq-r*`):

- the device: requests per second and their mean size as the driver got them
  (after merging), service time (issue to completion of the same request),
  the share of the window with no request at the driver and those idle gaps,
  the mean number of requests at the driver, and how many issues and
  completions found no partner (events perf dropped, or cut off at the ends);
- the reactor's backend operations: how long after the block layer completed
  a request the reactor got the operation's completion (a reactor asleep on
  another CPU than the device's interrupt must be woken first);
- the reactor's sends: how many, their mean size, how long each took from
  submission to completion, and the share of the window the reactor spent in
  them (an inline send of a large C2HData burst is the reactor's core copying
  it, and on loopback also running the receiver's TCP path).

The reactor's operations are told apart by the top byte of their user_data,
as `target/src/reactor.rs` encodes it (`token`): 1 receive, 2 send, 3 backend.

    python3 bench/scenarios/trace-cycle.py perf-script.txt 254:0
"""

import re
import sys
from bisect import bisect_right

RECV, SEND, BACKEND = 1, 2, 3
LINE = re.compile(r"^\s*(?P<comm>.+?)\s+(?P<tid>\d+)\s+\[(?P<cpu>\d+)\]\s+(?P<time>\d+\.\d+):\s+(?P<event>[\w:]+):\s(?P<rest>.*)$")
BLOCK = re.compile(r"^(?P<dev>\d+,\d+)\s+\S+\s.*?(?P<sector>\d+) \+ (?P<nr>\d+)\b")
RING = re.compile(r"ring (0x[0-9a-f]+)")
USER = re.compile(r"user_data (0x[0-9a-f]+)")
RESULT = re.compile(r"result (-?\d+)")


def quantiles(values):
    """p50 / p90 / p99 of a list, as text; '-' when empty."""
    if not values:
        return "-"
    v = sorted(values)
    pick = lambda q: v[min(len(v) - 1, int(q * len(v)))]
    return f"p50 {pick(0.5):.0f}  p90 {pick(0.9):.0f}  p99 {pick(0.99):.0f}"


def parse(lines, device):
    block, ring_events, reactor_rings = [], [], set()
    for line in lines:
        m = LINE.match(line)
        if not m:
            continue
        t = float(m["time"]) * 1e6
        event, rest = m["event"], m["rest"]
        if event in ("block:block_rq_issue", "block:block_rq_complete"):
            b = BLOCK.match(rest)
            if b and b["dev"] == device and int(b["nr"]) > 0:
                block.append((t, event.endswith("issue"), (int(b["sector"]), int(b["nr"]))))
        elif event in ("io_uring:io_uring_submit_req", "io_uring:io_uring_complete"):
            ring, user = RING.search(rest), USER.search(rest)
            if not ring or not user:
                continue
            data = int(user[1], 16)
            submit = event.endswith("submit_req")
            if submit and m["comm"].startswith("fabriq-r"):
                reactor_rings.add(ring[1])
            result = RESULT.search(rest)
            ring_events.append((t, ring[1], submit, data, int(result[1]) if result else 0))
    ring_events = [e for e in ring_events if e[1] in reactor_rings]
    # In time order whatever order the recording's CPUs were written out in.
    block.sort(key=lambda e: e[0])
    ring_events.sort(key=lambda e: e[0])
    return block, ring_events


def report(block, ring_events, device):
    if not block:
        sys.exit(f"trace-cycle: no request of device {device} in the trace")
    times = [e[0] for e in block] + [e[0] for e in ring_events]
    start, end = min(times), max(times)
    window = end - start
    print(f"window {window / 1e6:.3f} s")

    # The device, as its driver saw it: requests paired by (sector, length), issue to
    # completion. A recording starts on each CPU at a slightly different moment, and
    # perf drops events when its buffers fill, so an issue or a completion may have
    # lost its partner: only the pairs count, over the span from the first paired
    # issue to the last completion. A sequential run comes back to the same sectors
    # within the recording, so an issue that lost its completion must not wait for
    # the next completion of its sectors (that pair would span a whole lap of the
    # file and hide every gap in it): a second issue of the same request while the
    # first is outstanding means the first's completion was lost.
    issued, pairs, lost_issues, lost_completions = {}, [], 0, 0
    for t, is_issue, key in block:
        if is_issue:
            if key in issued:
                lost_issues += 1
            issued[key] = t
        elif key in issued:
            pairs.append((issued.pop(key), t, key[1] * 512))
        else:
            lost_completions += 1
    lost_issues += len(issued)
    if not pairs:
        sys.exit(f"trace-cycle: no request of device {device} both issued and completed in the trace")
    pairs.sort()
    span = max(c for _, c, _ in pairs) - pairs[0][0]
    gaps, reach = [], pairs[0][1]
    for began, done, _ in pairs[1:]:
        if began > reach:
            gaps.append(began - reach)
        reach = max(reach, done)
    service = [c - i for i, c, _ in pairs]
    completions = sorted(c for _, c, _ in pairs)
    mean_kib = sum(n for _, _, n in pairs) / len(pairs) / 1024
    print(f"device {device}: {len(pairs) / span * 1e6:,.0f} requests/s, mean {mean_kib:,.0f} KiB as issued")
    print(f"  service, issue to completion (us): {quantiles(service)}")
    idle = sum(gaps)
    print(f"  no request at the driver: {100 * idle / span:.1f}% of the time, {len(gaps)} gaps (us): {quantiles(gaps)}")
    print(f"  mean requests at the driver: {sum(service) / span:.2f}")
    print(f"  left unpaired: {lost_issues} issues, {lost_completions} completions")

    # The reactors' operations.
    pending, sends, send_bytes, deliveries, ops = {}, [], [], [], 0
    for t, ring, submit, data, result in ring_events:
        kind = data >> 56
        key = (ring, data)
        if submit:
            pending[key] = t
            continue
        began = pending.pop(key, None)
        if kind == SEND and began is not None:
            sends.append(t - began)
            send_bytes.append(max(result, 0))
        elif kind == BACKEND:
            ops += 1
            i = bisect_right(completions, t)
            if i:
                deliveries.append(t - completions[i - 1])
    print(f"backend operations: {ops / window * 1e6:,.0f}/s")
    print(f"  block completion to the reactor's completion (us): {quantiles(deliveries)}")
    if sends:
        mean = sum(send_bytes) / len(send_bytes) / 1024
        share = 100 * sum(sends) / window
        print(f"sends: {len(sends) / window * 1e6:,.0f}/s, mean {mean:,.1f} KiB")
        print(f"  submission to completion (us): {quantiles(sends)}; {share:.1f}% of the window in sends")
        big = [d for d, b in zip(sends, send_bytes) if b >= 1 << 20]
        if big:
            print(f"  sends of 1 MiB or more: {len(big)}, (us): {quantiles(big)}")


def main():
    if len(sys.argv) != 3 or not re.fullmatch(r"\d+:\d+", sys.argv[2]):
        sys.exit("usage: trace-cycle.py PERF_SCRIPT_TEXT MAJOR:MINOR")
    device = sys.argv[2].replace(":", ",")
    with open(sys.argv[1], encoding="utf-8", errors="replace") as f:
        block, ring_events = parse(f, device)
    report(block, ring_events, device.replace(",", ":"))


if __name__ == "__main__":
    main()

"""Live-heap trend of a heaptrack recording: the leak check that RSS cannot give.

RSS follows what the allocator keeps, not what the program holds: a
high-water mark under the default allocator settings, and allocator
fragmentation even when freed memory is returned at once. heaptrack
(run on the `system-alloc` build, whose every malloc it sees) records the
bytes actually live; a leak raises them, whatever the allocator does.

    python3 heap_trend.py RECORDING.zst --minutes M [--bucket 60]
                          [--max-slope 2.0] [--max-rise 10]

Takes the heap size after every allocation event (heaptrack_print's
massif export), keeps the last M minutes before the final shutdown, and
per bucket (a minute; a sixth of windows under six minutes) its minimum (the floor between requests:
what stays live) and mean. Fails like the soak's RSS verdict: only when
BOTH the least-squares slope of the floors exceeds --max-slope (MB/min) AND
the median floor of the window's last third exceeds its first third's by
more than --max-rise MB. Prints one JSON object.
"""
import argparse, json, os, subprocess, sys, tempfile


def series(recording):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "massif")
        subprocess.run(
            ["heaptrack_print", "-f", recording, "--print-leaks", "0", "--print-peaks", "0",
             "--print-allocators", "0", "--print-temporary", "0",
             "--print-massif", out, "--massif-threshold", "100",
             "--massif-detailed-freq", "1000000000"],
            check=True, stdout=subprocess.DEVNULL)
        t = None
        pts = []
        with open(out) as f:
            for line in f:
                if line.startswith("time="):
                    t = float(line[5:])
                elif line.startswith("mem_heap_B=") and t is not None:
                    pts.append((t, int(line[11:]) / 1e6))
    return pts


def slope(xs, ys):
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else 0.0


def median(v):
    v = sorted(v)
    return (v[len(v) // 2] + v[(len(v) - 1) // 2]) / 2


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("recording")
    ap.add_argument("--minutes", type=float, required=True)
    ap.add_argument("--bucket", type=float, help="seconds per bucket (default: a minute, or a sixth of a shorter window)")
    ap.add_argument("--max-slope", type=float, default=2.0)
    ap.add_argument("--max-rise", type=float, default=10.0)
    a = ap.parse_args()
    if a.bucket is None:
        a.bucket = min(60.0, a.minutes * 60.0 / 6.0)
    pts = series(a.recording)
    if not pts:
        print(json.dumps({"failures": ["heaptrack recorded no allocations"]}))
        return 1
    end = pts[-1][0]
    # The shutdown frees most of the heap in its last moments: stop before.
    hi = end - 5.0
    lo = hi - a.minutes * 60.0
    buckets = {}
    for t, mb in pts:
        if lo <= t < hi:
            buckets.setdefault(int((t - lo) // a.bucket), []).append(mb)
    keys = sorted(buckets)
    floors = [min(buckets[k]) for k in keys]
    means = [sum(buckets[k]) / len(buckets[k]) for k in keys]
    mins = [(k + 0.5) * a.bucket / 60.0 for k in keys]
    r = {
        "buckets": len(keys),
        "bucket_s": a.bucket,
        "floor_mb": [round(x, 1) for x in floors],
        "mean_mb": [round(x, 1) for x in means],
        "peak_mb": round(max(mb for _, mb in pts), 1),
        "failures": [],
    }
    if len(keys) >= 3:
        third = max(1, len(keys) // 3)
        r["floor_slope_mb_per_min"] = round(slope(mins, floors), 3)
        r["mean_slope_mb_per_min"] = round(slope(mins, means), 3)
        r["floor_rise_thirds_mb"] = round(median(floors[-third:]) - median(floors[:third]), 1)
        if r["floor_slope_mb_per_min"] > a.max_slope and r["floor_rise_thirds_mb"] > a.max_rise:
            r["failures"].append(
                f"live heap grows: floor slope {r['floor_slope_mb_per_min']} MB/min, "
                f"thirds rise {r['floor_rise_thirds_mb']} MB")
    else:
        r["failures"].append(f"only {len(keys)} buckets in the window: too short to judge")
    print(json.dumps(r))
    return 1 if r["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())

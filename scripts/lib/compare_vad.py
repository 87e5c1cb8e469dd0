"""earshot's native Silero VAD vs faster-whisper's (onnxruntime): speech
probabilities, speech boundaries and speed on the same samples.

Run by scripts/compare-vad inside <repo>/.venv; see that script's --help.
Not meant to be called directly.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

import numpy as np

# Option sets, faster-whisper VadOptions keyword arguments; the same four as
# inference/tests/vad_reference.rs.
OPTION_SETS = [
    {"name": "default", "params": {}},
    {"name": "batched", "params": {"max_speech_duration_s": 30, "min_silence_duration_ms": 160}},
    {
        "name": "silero",
        "params": {"min_speech_duration_ms": 250, "min_silence_duration_ms": 100, "speech_pad_ms": 30},
    },
    {
        "name": "split5",
        "params": {
            "max_speech_duration_s": 5,
            "min_silence_duration_ms": 500,
            "speech_pad_ms": 100,
            "threshold": 0.45,
        },
    },
]
TOLERANCE = 512  # samples: 32 ms, one window


def log(msg):
    print(f"compare-vad: {msg}", file=sys.stderr, flush=True)


def die(msg):
    print(f"compare-vad: error: {msg}", file=sys.stderr, flush=True)
    sys.exit(2)


def run(cmd, env=None):
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        die(f"{' '.join(cmd[:3])} ... failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return p


def agreement(ours, theirs):
    """(agreeing, total) boundaries: a start (end) of either side agrees when
    the other side has a start (end) within TOLERANCE samples."""
    agreed = 0
    for a, b in ((ours, theirs), (theirs, ours)):
        for s, e in a:
            agreed += any(abs(s - s2) <= TOLERANCE for s2, _ in b)
            agreed += any(abs(e - e2) <= TOLERANCE for _, e2 in b)
    return agreed, 2 * (len(ours) + len(theirs))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vad-bin", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--set", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--ref-script", required=True)
    ap.add_argument("--min-agreement", type=float, default=0.95)
    ap.add_argument("--max-prob-diff", type=float, default=1e-4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-speed", action="store_true")
    args = ap.parse_args()

    options = json.dumps(OPTION_SETS)
    ours_json = os.path.join(args.work, "ours.json")
    ref_json = os.path.join(args.work, "ref.json")
    env2 = dict(os.environ, RAYON_NUM_THREADS="2")

    log("earshot: decoding the VAD set and running the native VAD")
    run([args.vad_bin, "--model", args.model, "--set", args.set, "--dump-dir", args.work,
         "--options", options, "--out", ours_json], env=env2)
    ours = json.load(open(ours_json))
    inputs = [c["samples"] for c in ours["clips"]]
    log(f"faster-whisper: {len(inputs)} clips")
    run([sys.executable, args.ref_script, "--model", args.model, "--out", ref_json,
         "--options", options, "--probs-dir", args.work] + inputs)
    ref = json.load(open(ref_json))

    print(f"model: {args.model} (sha256 {ref['model_sha256'][:16]}...)")
    print(f"faster-whisper {ref['faster_whisper']}, onnxruntime {ref['onnxruntime']}")
    print()
    names = [o["name"] for o in OPTION_SETS]
    header = f"{'clip':<22} {'seconds':>8} {'max|dp|':>9}  " + "  ".join(
        f"{n + ' spans':>14} {n + ' bnd':>12}" for n in names)
    print(header)
    totals = {n: [0, 0, 0, 0] for n in names}  # agreed, total, identical clips, clips
    max_diff = 0.0
    windows = 0
    for o, r in zip(ours["clips"], ref["clips"]):
        if o["n_samples"] != r["n_samples"]:
            die(f"{o['name']}: sample counts differ ({o['n_samples']} vs {r['n_samples']})")
        p_ours = np.fromfile(o["probs"], dtype="<f4")
        p_ref = np.fromfile(r["probs"], dtype="<f4")
        if p_ours.shape != p_ref.shape:
            die(f"{o['name']}: {p_ours.shape[0]} windows vs {p_ref.shape[0]}")
        d = float(np.max(np.abs(p_ours - p_ref))) if p_ours.size else 0.0
        max_diff = max(max_diff, d)
        windows += p_ours.size
        cells = []
        for n in names:
            a, b = o["timestamps"][n], r["timestamps"][n]
            ag, tot = agreement(a, b)
            t = totals[n]
            t[0] += ag
            t[1] += tot
            t[2] += a == b
            t[3] += 1
            cells.append(f"{f'{len(a)}/{len(b)}':>14} {f'{ag}/{tot}':>12}")
        print(f"{o['name']:<22} {o['n_samples'] / 16000:>8.1f} {d:>9.2e}  " + "  ".join(cells))
    print()
    print(f"speech probabilities: max |earshot - onnxruntime| = {max_diff:.2e} "
          f"over {windows} windows of {len(ours['clips'])} clips")
    failed = max_diff >= args.max_prob_diff
    for n in names:
        ag, tot, same, clips = totals[n]
        frac = ag / tot if tot else 1.0
        print(f"boundaries within 32 ms, {n:<8}: {ag}/{tot} = {100 * frac:.2f}%  "
              f"(identical span lists on {same}/{clips} clips)")
        failed |= frac < args.min_agreement

    if not args.no_speed:
        longest = max(ours["clips"], key=lambda c: c["n_samples"])
        name = longest["name"]
        dur = longest["n_samples"] / 16000
        print()
        print(f"speed on {name} ({dur:.0f} s), {args.rounds} alternating rounds x {args.repeat} calls, "
              f"model loaded, median seconds per get_speech_timestamps call:")
        times = {"earshot (2 threads)": [], "earshot (1 thread)": [], "faster-whisper (onnxruntime, 1 thread)": []}
        tjson = os.path.join(args.work, "time.json")
        for _ in range(args.rounds):
            for label, threads in (("earshot (2 threads)", "2"), ("earshot (1 thread)", "1")):
                run([args.vad_bin, "--model", args.model,
                     "--options", json.dumps(OPTION_SETS[:1]), "--repeat", str(args.repeat),
                     "--out", tjson, "--raw", longest["samples"]],
                    env=dict(os.environ, RAYON_NUM_THREADS=threads))
                times[label] += json.load(open(tjson))["clips"][0]["seconds"]
            run([sys.executable, args.ref_script, "--model", args.model, "--out", tjson,
                 "--options", json.dumps(OPTION_SETS[:1]), "--time-repeat", str(args.repeat),
                 longest["samples"]])
            times["faster-whisper (onnxruntime, 1 thread)"] += json.load(open(tjson))["clips"][0]["seconds"]
        fw = statistics.median(times["faster-whisper (onnxruntime, 1 thread)"])
        for label, t in times.items():
            m = statistics.median(t)
            print(f"  {label:<40} {m:7.3f} s  ({dur / m:6.0f}x real time)  "
                  f"faster-whisper / this = {fw / m:.2f}x")

    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

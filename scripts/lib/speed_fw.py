"""earshot vs faster-whisper, whole process, on one long recording and one
short file: the speed table of `scripts/compare-faster-whisper --batched`.

Each configuration is one process that loads the model, transcribes the file
and exits; the configurations run in turn (round 1 of every one, then round 2,
...) so a busy machine slows them alike, and each one's median wall time over
the rounds is reported with its peak RSS and its WER against the reference
text. The ratio column is faster-whisper's median over earshot's (> 1: earshot
is faster).

faster-whisper runs greedy (beam_size=1), like earshot, and on the same
CTranslate2 model folder earshot reads; 2 threads each.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare_fw import normalize, edit_distance  # noqa: E402

FW_CHILD = r"""
import sys, time
from faster_whisper import WhisperModel, BatchedInferencePipeline
mode, ct, path, model_dir, out = sys.argv[1:6]
m = WhisperModel(model_dir, device="cpu", compute_type=ct, cpu_threads=2)
if mode == "batched":
    segs, _ = BatchedInferencePipeline(m).transcribe(
        path, batch_size=8, beam_size=1, language="en")
else:
    segs, _ = m.transcribe(path, beam_size=1, language="en",
                           vad_filter=(mode == "vad"))
text = " ".join(s.text.strip() for s in segs)
open(out, "w").write(text)
"""


def run(cmd, env=None):
    """Runs `cmd`; returns (wall seconds, peak RSS MB). Fails loudly."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit(f"speed: {' '.join(cmd[:3])} ... exited {code}:\n{err[-2000:]}")
    return wall, usage.ru_maxrss / 1024.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--earshot-bin", required=True)
    ap.add_argument("--model", default="tiny.en")
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--audio", required=True, action="append",
                    help="LABEL=PATH=REFERENCE_TEXT_FILE (repeatable)")
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--earshot", action="append", default=[],
                    help="NAME=extra args for earshot transcribe (repeatable)")
    ap.add_argument("--min-ratio", type=float, default=None,
                    help="exit 1 unless the first earshot config is at least this many "
                         "times as fast as faster-whisper batched int8 on every audio")
    a = ap.parse_args()
    os.makedirs(a.out_dir, exist_ok=True)
    env = dict(os.environ, RAYON_NUM_THREADS="2", OMP_NUM_THREADS="2")
    es_configs = [c.split("=", 1) for c in a.earshot] or [["batched int8", "--pipeline batched --compute-type int8"]]
    fw_configs = [("fw batched int8", "batched", "int8"),
                  ("fw batched float32", "batched", "float32"),
                  ("fw sequential int8", "sequential", "int8"),
                  ("fw sequential float32", "sequential", "float32")]
    failed = False
    for spec in a.audio:
        label, path, ref_file = spec.split("=", 2)
        ref = normalize(open(ref_file, encoding="utf-8").read())
        dur = float(subprocess.check_output(["soxi", "-D", path]).decode())
        configs = []
        for name, extra in es_configs:
            out = os.path.join(a.out_dir, f"{label}-es-{name.replace(' ', '_')}")
            os.makedirs(out, exist_ok=True)
            # Leading KEY=VALUE words set environment variables for that
            # configuration only (env(1) execs earshot: same process, same RSS).
            words = extra.split()
            env_words = []
            while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
                env_words.append(words.pop(0))
            cmd = (["env"] + env_words if env_words else []) + [
                a.earshot_bin, "transcribe", path, "--model", a.model, "--format", "text",
                "--output", out, "--no-progress"] + words
            stem = os.path.splitext(os.path.basename(path))[0]
            configs.append((f"earshot {name}", cmd, os.path.join(out, stem + ".txt")))
        for name, mode, ct in fw_configs:
            out = os.path.join(a.out_dir, f"{label}-{name.replace(' ', '_')}.txt")
            cmd = [sys.executable, "-c", FW_CHILD, mode, ct, path, a.model_dir, out]
            configs.append((name, cmd, out))
        times = {n: [] for n, _, _ in configs}
        rss = {n: 0.0 for n, _, _ in configs}
        for r in range(a.rounds):
            # Each round starts one configuration later, so that no one
            # always runs first (after the previous round's slowest peer).
            k = r % len(configs)
            for name, cmd, _ in configs[k:] + configs[:k]:
                wall, peak = run(cmd, env)
                times[name].append(wall)
                rss[name] = max(rss[name], peak)
                print(f"speed: {label} round {r + 1}: {name}: {wall:.2f} s", file=sys.stderr, flush=True)
        print(f"\n{label}: {dur:.1f} s of audio ({path}); median of {a.rounds} alternating "
              f"whole-process runs, 2 threads, {os.cpu_count()} CPUs")
        print(f"  {'configuration':26} {'wall s':>8} {'x real':>7} {'peak MB':>8} {'WER':>6}  runs")
        med = {n: statistics.median(v) for n, v in times.items()}
        for name, _, out in configs:
            hyp = normalize(open(out, encoding="utf-8").read())
            w = edit_distance(ref, hyp) / max(len(ref), 1)
            runs = ", ".join(f"{x:.1f}" for x in times[name])
            print(f"  {name:26} {med[name]:8.2f} {dur / med[name]:7.1f} {rss[name]:8.0f} "
                  f"{100 * w:5.2f}%  {runs}")
        first = configs[0][0]
        print(f"  speed ratio, {first} (> 1: earshot is faster):")
        for name, _, _ in fw_configs:
            print(f"    vs {name:22}: {med[name] / med[first]:.2f}x")
        if a.min_ratio is not None:
            r = med["fw batched int8"] / med[first]
            if r < a.min_ratio:
                print(f"  FAIL: {r:.2f}x < {a.min_ratio}x", flush=True)
                failed = True
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

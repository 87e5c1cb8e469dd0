"""earshot vs faster-whisper: accuracy (WER) and speed on the fixture clips.

Run by scripts/compare-faster-whisper inside <repo>/.venv; see that script's
--help. Not meant to be called directly.
"""

import argparse
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
import unicodedata

# Decoding options, mirroring earshot's defaults (greedy with temperature
# fallback, conditioned on previous text, timestamps on, no VAD).
FW_OPTIONS = dict(
    beam_size=1,
    best_of=1,
    temperature=[0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
    condition_on_previous_text=True,
    vad_filter=False,
    without_timestamps=False,
    language="en",
)


def log(msg):
    print(f"compare-faster-whisper: {msg}", file=sys.stderr, flush=True)


def die(msg):
    print(f"compare-faster-whisper: error: {msg}", file=sys.stderr, flush=True)
    sys.exit(2)


# ---- WER -----------------------------------------------------------------------

def normalize(text):
    """lowercase, drop punctuation (apostrophes join: "o'clock" -> "oclock"),
    hyphens and other separators become spaces, collapse whitespace."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = text.replace("\u2019", "'")
    text = re.sub(r"'", "", text)
    text = re.sub(r"[^\w\s]|_", " ", text)
    return text.split()


def edit_distance(ref, hyp):
    """Word-level Levenshtein distance (substitutions + deletions + insertions)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def wer(ref_text, hyp_text):
    """(edits, reference word count) so that corpus WER = sum edits / sum words."""
    ref, hyp = normalize(ref_text), normalize(hyp_text)
    return edit_distance(ref, hyp), len(ref)


def ratio(pair):
    edits, n = pair
    return edits / n if n else (0.0 if edits == 0 else float("inf"))


# ---- manifest ------------------------------------------------------------------

def read_manifest(path):
    rows = []
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        for col in ("file", "format", "duration_s", "text"):
            if col not in header:
                die(f"{path}: no '{col}' column in header {header}")
        for line in f:
            if not line.strip():
                continue
            r = dict(zip(header, line.rstrip("\n").split("\t")))
            r["path"] = os.path.join(os.path.dirname(path), r["file"])
            r["duration_s"] = float(r["duration_s"])
            r["stem"] = os.path.splitext(r["file"])[0]
            rows.append(r)
    if not rows:
        die(f"{path} lists no clips")
    return rows


# ---- faster-whisper ------------------------------------------------------------

class FallbackCounter(logging.Handler):
    """Counts faster-whisper's temperature fallbacks (its DEBUG log lines).
    A fallback above temperature 0 samples, so earshot cannot be expected to
    match faster-whisper word for word on such a clip."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.count = 0

    def emit(self, record):
        if "threshold is not met" in record.getMessage():
            self.count += 1


FALLBACKS = FallbackCounter()
_fw_logger = logging.getLogger("faster_whisper")
_fw_logger.setLevel(logging.DEBUG)
_fw_logger.addHandler(FALLBACKS)
_fw_logger.propagate = False

def run_faster_whisper(model_dir, compute_type, clips, save_dir=None, repeat=1, words=False):
    """Transcribe each clip with one model instance, `repeat` passes over the
    clips. Returns (results of the first pass, load_s, fastest pass's total
    seconds, all pass totals). Timing covers transcribe() + consuming the
    segment generator, audio decoding included; model loading is timed apart."""
    from faster_whisper import WhisperModel

    t0 = time.perf_counter()
    model = WhisperModel(model_dir, device="cpu", compute_type=compute_type, cpu_threads=2, num_workers=1)
    load_s = time.perf_counter() - t0
    results = {}
    passes = []
    per_clip = {}
    for rep in range(repeat):
        total = 0.0
        for c in clips:
            FALLBACKS.count = 0
            t0 = time.perf_counter()
            segments, info = model.transcribe(c["path"], word_timestamps=words, **FW_OPTIONS)
            segments = list(segments)
            dt = time.perf_counter() - t0
            total += dt
            per_clip[c["stem"]] = min(dt, per_clip.get(c["stem"], dt))
            tag = f" pass {rep + 1}/{repeat}" if repeat > 1 else ""
            log(f"faster-whisper {compute_type}{tag}: {c['file']}: {c['duration_s']:.1f} s audio in {dt:.2f} s"
                + (f" ({FALLBACKS.count} temperature fallbacks)" if FALLBACKS.count else ""))
            if rep:
                continue
            doc = {
                "text": "".join(s.text for s in segments).strip(),
                "language": info.language,
                "duration": info.duration,
                "segments": [
                    {
                        "start": round(s.start, 3),
                        "end": round(s.end, 3),
                        "text": s.text,
                        "avg_logprob": s.avg_logprob,
                        "no_speech_prob": s.no_speech_prob,
                        "temperature": s.temperature,
                        **({"words": [
                            {"word": w.word, "start": w.start, "end": w.end, "probability": w.probability}
                            for w in s.words
                        ]} if words else {}),
                    }
                    for s in segments
                ],
                "elapsed_s": dt,
                "fallbacks": FALLBACKS.count,
            }
            results[c["stem"]] = doc
            if save_dir:
                with open(os.path.join(save_dir, c["stem"] + ".json"), "w", encoding="utf-8") as f:
                    json.dump(doc, f, indent=2, ensure_ascii=False)
        passes.append(total)
    del model
    # sum over clips of each clip's fastest time: a steadier figure on a busy machine
    passes.append(sum(per_clip.values()))
    return results, load_s, min(passes[:-1]), passes


# ---- earshot -------------------------------------------------------------------

def find_earshot_output(out_dir, clip):
    """earshot writes <out_dir>/<input stem>.json; accept <file name>.json too."""
    for name in (clip["stem"] + ".json", clip["file"] + ".json"):
        p = os.path.join(out_dir, name)
        if os.path.isfile(p):
            return p
    return None


COMPUTE_TYPE = "float32"


def run_earshot(binary, model, clips, out_dir, models_dir, repeat=1, words=False):
    """One earshot process over all clips, `repeat` times. Returns (results of
    the first run, fastest run's wall seconds, all wall seconds)."""
    walls = []
    results = None
    for rep in range(repeat):
        r, wall = run_earshot_once(binary, model, clips, out_dir, models_dir, words)
        log(f"earshot run {rep + 1}/{repeat}: {wall:.2f} s")
        walls.append(wall)
        results = results or r
    return results, min(walls), walls


def run_earshot_once(binary, model, clips, out_dir, models_dir, words=False):
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)
    cmd = [binary, "transcribe", *[c["path"] for c in clips], "--model", model,
           "--format", "verbose_json" if words else "json", "--output", out_dir]
    if words:
        cmd.append("--word-timestamps")
    if COMPUTE_TYPE != "float32":
        cmd += ["--compute-type", COMPUTE_TYPE]
    env = dict(os.environ, RAYON_NUM_THREADS="2", EARSHOT_THREADS="2")
    if models_dir:
        env["EARSHOT_MODELS_DIR"] = models_dir
    log("running: RAYON_NUM_THREADS=2 EARSHOT_THREADS=2 " + " ".join(cmd[:2]) + f" <{len(clips)} clips> " + " ".join(cmd[2 + len(clips):]))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        die(f"earshot exited with status {proc.returncode}")
    results = {}
    for c in clips:
        p = find_earshot_output(out_dir, c)
        if p is None:
            die(f"earshot wrote no JSON for {c['file']} in {out_dir} (expected {c['stem']}.json; "
                f"found: {sorted(os.listdir(out_dir))[:20]}); stdout started with: {proc.stdout[:300]!r}")
        with open(p, encoding="utf-8") as f:
            doc = json.load(f)
        missing = [k for k in ("text", "language", "duration", "segments") if k not in doc]
        seg_missing = sorted({k for s in doc.get("segments", [])
                              for k in ("start", "end", "text", "avg_logprob", "no_speech_prob") if k not in s})
        if missing or seg_missing:
            log(f"warning: {os.path.basename(p)} lacks fields {missing + ['segments[].' + k for k in seg_missing]}")
        results[c["stem"]] = doc
    return results, wall


# ---- word timestamps -------------------------------------------------------------

def clip_words(doc):
    return [w for s in doc.get("segments", []) for w in s.get("words", [])]


def match_words(fw_words, es_words):
    """Pairs (fw word, es word) for the words both engines produced: the
    longest common subsequence of their normalised spellings."""
    import difflib

    def key(w):
        return " ".join(normalize(w["word"]))

    a = [key(w) for w in fw_words]
    b = [key(w) for w in es_words]
    pairs = []
    for blk in difflib.SequenceMatcher(None, a, b, autojunk=False).get_matching_blocks():
        for k in range(blk.size):
            if a[blk.a + k]:
                pairs.append((fw_words[blk.a + k], es_words[blk.b + k]))
    return pairs


def clip_width(clips):
    """Width of the clip-name column: 22, or the longest file name."""
    return max([22] + [len(c["file"]) for c in clips])


def compare_words(clips, fw, es, max_time=0.1, min_share=0.95, max_median=0.02, max_prob=0.05):
    """Prints the per-clip and corpus agreement of word times and
    probabilities; returns True when the corpus meets the thresholds."""
    import statistics

    w = clip_width(clips)
    print()
    hdr = f"{'clip':<{w}} {'fw':>5} {'es':>5} {'both':>5} {'<=0.1s':>7} {'med_s':>6} {'p95_s':>6} {'dprob':>6}"
    print(hdr)
    print("-" * len(hdr))
    diffs, pdiffs, n_fw, n_es = [], [], 0, 0
    for c in clips:
        fw_w, es_w = clip_words(fw[c["stem"]]), clip_words(es[c["stem"]])
        n_fw += len(fw_w)
        n_es += len(es_w)
        pairs = match_words(fw_w, es_w)
        d = [abs(f[k] - e[k]) for f, e in pairs for k in ("start", "end")]
        p = [abs(f["probability"] - e["probability"]) for f, e in pairs]
        diffs += d
        pdiffs += p
        if d:
            share = sum(x <= max_time + 1e-9 for x in d) / len(d)
            q = sorted(d)[min(len(d) - 1, int(0.95 * len(d)))]
            print(f"{c['file']:<{w}} {len(fw_w):>5} {len(es_w):>5} {len(pairs):>5} {100 * share:6.1f}% "
                  f"{statistics.median(d):6.3f} {q:6.3f} {statistics.median(p):6.3f}")
        else:
            print(f"{c['file']:<{w}} {len(fw_w):>5} {len(es_w):>5} {0:>5}")
    print("-" * len(hdr))
    if not diffs:
        print("FAIL: no words in common")
        return False
    share = sum(x <= max_time + 1e-9 for x in diffs) / len(diffs)
    med = statistics.median(diffs)
    pshare = sum(x <= max_prob + 1e-9 for x in pdiffs) / len(pdiffs)
    print(f"corpus: {n_fw} faster-whisper words, {n_es} earshot words, {len(pdiffs)} in common; "
          f"start/end within {max_time} s: {100 * share:.1f}%; median |diff| {med:.3f} s; "
          f"mean |diff| {statistics.fmean(diffs):.3f} s; max {max(diffs):.2f} s")
    print(f"        probability within {max_prob}: {100 * pshare:.1f}%; median |diff| "
          f"{statistics.median(pdiffs):.4f}; max {max(pdiffs):.3f}")
    ok = share >= min_share and med <= max_median and pshare >= min_share
    verdict = "OK" if ok else "FAIL"
    print(f"{verdict}: word times within {max_time} s for {100 * share:.1f}% (need >= {100 * min_share:.0f}%), "
          f"median {med:.3f} s (need <= {max_median}), probabilities within {max_prob} for "
          f"{100 * pshare:.1f}% (need >= {100 * min_share:.0f}%)")
    return ok


# ---- report --------------------------------------------------------------------

def fmt_wer(pair):
    return f"{100 * ratio(pair):6.2f}%"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--model", default="tiny.en")
    ap.add_argument("--models-dir")
    ap.add_argument("--earshot-bin")
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--max-wer", type=float, default=0.02)
    ap.add_argument("--peer-only", action="store_true")
    ap.add_argument("--speed", action="store_true")
    ap.add_argument("--show-text", action="store_true")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--words", action="store_true")
    ap.add_argument("--compute-type", default="float32", choices=["float32", "int8"])
    a = ap.parse_args()
    global COMPUTE_TYPE
    COMPUTE_TYPE = a.compute_type

    clips = read_manifest(a.manifest)
    if a.limit:
        clips = clips[: a.limit]
    audio_s = sum(c["duration_s"] for c in clips)
    log(f"{len(clips)} clips, {audio_s:.1f} s of audio")
    os.makedirs(a.out_dir, exist_ok=True)

    # earshot first (one process, all clips), then the peer runs, one at a time.
    es = es_wall = None
    if not a.peer_only:
        es, es_wall, es_walls = run_earshot(a.earshot_bin, a.model, clips, os.path.join(a.out_dir, "earshot"),
                                            a.models_dir, a.repeat)

    fw_dir = os.path.join(a.out_dir, "faster-whisper")
    os.makedirs(fw_dir, exist_ok=True)
    fw, fw_load, fw_time, fw_passes = run_faster_whisper(a.model_dir, a.compute_type, clips, fw_dir, a.repeat)
    fw8 = None
    if a.speed:
        fw8, fw8_load, fw8_time, fw8_passes = run_faster_whisper(a.model_dir, "int8", clips, None, a.repeat)

    # ---- per-clip table
    w = clip_width(clips)
    print()
    hdr = f"{'clip':<{w}} {'format':<19} {'dur_s':>6}"
    if es is not None:
        hdr += f" {'es~fw':>8} {'es~ref':>8}"
    hdr += f" {'fw~ref':>8}"
    if fw8 is not None:
        hdr += f" {'fw8~ref':>8}"
    hdr += f" {'fb':>3}"
    print(hdr)
    print("-" * len(hdr))
    tot = {"es_fw": [0, 0], "es_ref": [0, 0], "fw_ref": [0, 0], "fw8_ref": [0, 0]}

    def add(key, pair):
        tot[key][0] += pair[0]
        tot[key][1] += pair[1]
        return pair

    for c in clips:
        fw_text = fw[c["stem"]]["text"]
        line = f"{c['file']:<{w}} {c['format']:<19} {c['duration_s']:6.1f}"
        if es is not None:
            es_text = es[c["stem"]].get("text", "")
            line += f" {fmt_wer(add('es_fw', wer(fw_text, es_text))):>8}"
            line += f" {fmt_wer(add('es_ref', wer(c['text'], es_text))):>8}"
        line += f" {fmt_wer(add('fw_ref', wer(c['text'], fw_text))):>8}"
        if fw8 is not None:
            line += f" {fmt_wer(add('fw8_ref', wer(c['text'], fw8[c['stem']]['text']))):>8}"
        line += f" {fw[c['stem']]['fallbacks']:>3}"
        print(line)
        if a.show_text:
            print(f"    ref: {c['text']}")
            print(f"    fw : {fw_text}")
            if fw8 is not None:
                print(f"    fw8: {fw8[c['stem']]['text']}")
            if es is not None:
                print(f"    es : {es[c['stem']].get('text', '')}")
    print("-" * len(hdr))
    line = f"{'corpus':<{w}} {'':<19} {audio_s:6.1f}"
    if es is not None:
        line += f" {fmt_wer(tot['es_fw']):>8} {fmt_wer(tot['es_ref']):>8}"
    line += f" {fmt_wer(tot['fw_ref']):>8}"
    if fw8 is not None:
        line += f" {fmt_wer(tot['fw8_ref']):>8}"
    print(line)
    print("(es = earshot, fw = faster-whisper float32, fw8 = int8; a~b = WER of a with b as reference;\n"
          " fb = faster-whisper float32 temperature fallbacks: sampled output, so es~fw may differ there)")

    # ---- speed
    def runs(xs):
        return "" if len(xs) < 2 else "; runs " + ", ".join(f"{x:.1f}" for x in xs)

    def fw_runs(xs):
        # xs = pass totals + sum of per-clip bests
        if len(xs) < 3:
            return ""
        return f"{runs(xs[:-1])}; per-clip fastest sum {xs[-1]:.1f} = {audio_s / xs[-1]:.2f} audio-s/s"

    best = " (fastest of %d runs)" % a.repeat if a.repeat > 1 else ""
    try:
        load = "load average %.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        load = "load average unknown"
    print()
    print(f"speed on {len(clips)} clips, {audio_s:.1f} s of audio, 2 threads{best}, {os.cpu_count()} CPUs, {load}")
    print("audio seconds per wall second:")
    print(f"  faster-whisper float32: {audio_s / fw_time:7.2f}  ({fw_time:.1f} s transcribing{fw_runs(fw_passes)}; "
          f"model load {fw_load:.2f} s)")
    if fw8 is not None:
        print(f"  faster-whisper int8   : {audio_s / fw8_time:7.2f}  ({fw8_time:.1f} s transcribing{fw_runs(fw8_passes)}; "
              f"model load {fw8_load:.2f} s)")
    if es is not None:
        print(f"  earshot               : {audio_s / es_wall:7.2f}  ({es_wall:.1f} s, whole process incl. model load"
              f"{runs(es_walls)})")
        print("  speed ratio (> 1: earshot is faster):")
        print(f"    earshot / faster-whisper float32: {fw_time / es_wall:.2f}x"
              f"  ({(fw_time + fw_load) / es_wall:.2f}x counting faster-whisper's model load too)")
        if fw8 is not None:
            print(f"    earshot / faster-whisper int8   : {fw8_time / es_wall:.2f}x"
                  f"  ({(fw8_time + fw8_load) / es_wall:.2f}x counting faster-whisper's model load too)")
    print(f"\ntranscripts: {a.out_dir}/{{faster-whisper{',earshot' if es is not None else ''}}}/<clip>.json")

    status = 0
    if es is not None:
        corpus = ratio(tot["es_fw"])
        if corpus > a.max_wer:
            print(f"\nFAIL: corpus WER earshot vs faster-whisper {corpus:.4f} > --max-wer {a.max_wer}")
            status = 1
        else:
            print(f"\nOK: corpus WER earshot vs faster-whisper {corpus:.4f} <= --max-wer {a.max_wer}")

    if a.words and es is not None:
        # A second pass of both engines with word timestamps on (which also
        # moves each window's seek to the last word, so the text is checked
        # again too).
        print("\n==> word timestamps (faster-whisper word_timestamps=True, earshot --word-timestamps)")
        t0 = time.perf_counter()
        esw, esw_wall, _ = run_earshot(a.earshot_bin, a.model, clips, os.path.join(a.out_dir, "earshot-words"),
                                       a.models_dir, 1, words=True)
        fw_words_dir = os.path.join(a.out_dir, "faster-whisper-words")
        os.makedirs(fw_words_dir, exist_ok=True)
        fww, _, fww_time, _ = run_faster_whisper(a.model_dir, a.compute_type, clips, fw_words_dir, 1, words=True)
        wtot = [0, 0]
        for c in clips:
            e, n = wer(fww[c["stem"]]["text"], esw[c["stem"]].get("text", ""))
            wtot[0] += e
            wtot[1] += n
        wcorpus = ratio(wtot)
        print(f"text with word timestamps: corpus WER earshot vs faster-whisper {wcorpus:.4f}; "
              f"earshot {esw_wall:.1f} s, faster-whisper {fww_time:.1f} s ({time.perf_counter() - t0:.0f} s in all)")
        if wcorpus > a.max_wer:
            print(f"FAIL: corpus WER with word timestamps {wcorpus:.4f} > --max-wer {a.max_wer}")
            status = 1
        if not compare_words(clips, fww, esw):
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())

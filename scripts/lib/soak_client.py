"""The soak's load and its measurements (run by scripts/soak).

Drives a running `earshot serve` in two phases, sampling the server's
resident memory, its peak (/proc/PID/status VmRSS, VmHWM) and its open
file descriptors (/proc/PID/fd) every INTERVAL seconds throughout:

1. Warm-up. The server keeps freed pages (src/main.rs keep_freed_memory:
   mimalloc's purge is off), so its RSS is a high-water mark: it steps up
   whenever a larger batch, or a new mix of batches side by side, runs for
   the first time, and never comes down. Measured from a cold start, those
   first-time steps read as a leak. So before measuring, the warm-up sends
   every request class at its largest size (the one clip, the longest chat
   prompt, the summary) at the full concurrency of the soak: in waves where
   all CLIENTS start together, one wave per way of splitting the clients
   between transcriptions, summaries and chat (15 for 4 clients), plus one
   wave of every bad request from every client. It repeats such rounds
   (at least --warmup-rounds) until a whole round raises the peak RSS
   (VmHWM) by at most --warmup-settle MB (at most --warmup-max-rounds).
2. Steady load for --minutes: CLIENTS threads, each with its own seeded
   random stream, pick transcriptions (multipart WAV), streamed chat
   completions (SSE read to the end), summaries and bad requests
   (undecodable audio, malformed JSON, empty fields, an unknown route) by
   fixed weights, with 50-500 ms of think time, so the server is busy but
   its queues are not permanently full.

The trend is judged over the steady samples only, by two statistics, and
memory fails only when both are over their limits: the least-squares slope
(MB/min), and the rise from the median of the window's first third to the
median of its last third (MB). A leak raises both; a single late step or a
one-sample spike raises the slope but hardly the medians, and noise around
a flat line raises neither for long. FDs fail on their slope alone (they
do not step). The window must span at least 2 minutes and 6 samples to be
judged (a 1-minute smoke reports the figures without a verdict).

It prints a JSON report (status codes per request kind for each phase,
warm-up rounds, the statistics, the verdict and the per-sample series) and
exits 1 on any 5xx other than 503 (the server's deliberate "queue full"),
on a client-side error (connection refused or reset, a truncated stream,
a bad request answered below 400), on the server process going away, or
on a trend over its limits.

Standard library only: it must run without the test virtualenv.

    soak_client.py --base URL --pid PID --minutes N --clip WAV [--interval 10]
        [--clients 4] [--seed 1] [--warmup-rounds 2] [--warmup-max-rounds 5]
        [--warmup-settle 5] [--max-rss-slope 2.0] [--max-rss-rise 10]
        [--max-fd-slope 0.5] [--label NAME] [--report OUT]
"""
import argparse
import http.client
import itertools
import json
import os
import random
import statistics
import sys
import threading
import time
import urllib.parse

p = argparse.ArgumentParser()
p.add_argument("--base", required=True)
p.add_argument("--pid", type=int, required=True)
p.add_argument("--minutes", type=float, default=10, help="steady load after the warm-up")
p.add_argument("--clip", required=True)
p.add_argument("--interval", type=float, default=10)
p.add_argument("--clients", type=int, default=4)
p.add_argument("--seed", type=int, default=1)
p.add_argument("--warmup-rounds", type=int, default=2, help="at least this many warm-up rounds")
p.add_argument("--warmup-max-rounds", type=int, default=5)
p.add_argument("--warmup-settle", type=float, default=5.0, help="MB of VmHWM rise that still counts as settled")
p.add_argument("--max-rss-slope", type=float, default=2.0, help="MB/min")
p.add_argument("--max-rss-rise", type=float, default=10.0, help="MB, median of the last third minus the first")
p.add_argument("--max-fd-slope", type=float, default=0.5, help="FDs/min")
p.add_argument("--label", default="default")
p.add_argument("--report")
args = p.parse_args()

url = urllib.parse.urlparse(args.base)
clip = open(args.clip, "rb").read()
TEXT = (
    "Good morning everyone. We agreed to ship the new bicycle lights on Friday. "
    "Marketing starts the campaign on Monday and the press release goes out on Tuesday. "
    "The factory confirmed the first shipment of two thousand units. "
    "Finance asked for the updated budget by the end of the week."
)
CHAT_PROMPTS = ["Name three colors.", "Say hello.", "Count to five."]
CHAT_MAX_TOKENS = 16
SUMMARY_MAX_TOKENS = 32


def multipart(rng, fields, files):
    b = "earshotsoak%08x" % rng.getrandbits(32)
    out = bytearray()
    for k, v in fields.items():
        out += f'--{b}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
    for k, (name, data, ctype) in files.items():
        out += (
            f'--{b}\r\nContent-Disposition: form-data; name="{k}"; filename="{name}"\r\n'
            f"Content-Type: {ctype}\r\n\r\n"
        ).encode()
        out += data + b"\r\n"
    out += f"--{b}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={b}"


def request(method, path, body=None, ctype=None, stream=False):
    """(status, body bytes). Raises on connection errors."""
    c = http.client.HTTPConnection(url.hostname, url.port, timeout=600)
    try:
        headers = {"Content-Type": ctype} if ctype else {}
        c.request(method, path, body=body, headers=headers)
        r = c.getresponse()
        if not stream:
            return r.status, r.read()
        # SSE: read line by line to the end; the last data line is [DONE].
        data, done = bytearray(), False
        while True:
            line = r.readline()
            if not line:
                break
            data += line
            if line.strip() == b"data: [DONE]":
                done = True
        if r.status == 200 and not done:
            raise RuntimeError("stream ended without [DONE]")
        return r.status, bytes(data)
    finally:
        c.close()


def transcription(rng, largest=False):
    body, ctype = multipart(rng, {"model": "whisper-1"}, {"file": ("clip.wav", clip, "audio/wav")})
    s, b = request("POST", "/v1/audio/transcriptions", body, ctype)
    if s == 200 and "text" not in json.loads(b):
        raise RuntimeError(f"transcription without text: {b[:200]!r}")
    return s


def chat_stream(rng, largest=False):
    prompt = max(CHAT_PROMPTS, key=len) if largest else rng.choice(CHAT_PROMPTS)
    req = {
        "model": "smollm2-135m-instruct",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": CHAT_MAX_TOKENS,
        "stream": True,
    }
    s, _ = request("POST", "/v1/chat/completions", json.dumps(req).encode(), "application/json", stream=True)
    return s


def summary(rng, largest=False):
    req = {"text": TEXT, "max_tokens": SUMMARY_MAX_TOKENS}
    s, b = request("POST", "/v1/summarize", json.dumps(req).encode(), "application/json")
    if s == 200 and "summary" not in json.loads(b):
        raise RuntimeError(f"summary without text: {b[:200]!r}")
    return s


BAD = [
    # Not audio at all.
    lambda rng: request("POST", "/v1/audio/transcriptions", *multipart(rng, {}, {"file": ("x.wav", b"this is not audio" * 50, "audio/wav")})),
    # A RIFF header over junk (a short but valid WAV would be a sane 200).
    lambda rng: request("POST", "/v1/audio/transcriptions", *multipart(rng, {}, {"file": ("x.wav", b"RIFF\x24\x00\x00\x00WAVEjunk" + rng.randbytes(4000), "audio/wav")})),
    # No file field.
    lambda rng: request("POST", "/v1/audio/transcriptions", *multipart(rng, {"model": "whisper-1"}, {})),
    # Malformed JSON.
    lambda rng: request("POST", "/v1/chat/completions", b'{"messages": [', "application/json"),
    # Empty messages, empty text.
    lambda rng: request("POST", "/v1/chat/completions", b'{"messages": []}', "application/json"),
    lambda rng: request("POST", "/v1/summarize", b'{"text": ""}', "application/json"),
    # An unknown route.
    lambda rng: request("GET", "/v1/nothing-here"),
]


def check_bad(s):
    if s < 400 or (s >= 500 and s != 503):
        raise RuntimeError(f"a bad request got {s}")
    return s


def bad(rng, largest=False):
    return check_bad(rng.choice(BAD)(rng)[0])


KINDS = [("transcription", transcription, 4), ("chat_stream", chat_stream, 3), ("summary", summary, 2), ("bad", bad, 3)]
FNS = {name: fn for name, fn, _ in KINDS}
WEIGHTS = [w for _, _, w in KINDS]

lock = threading.Lock()
codes = {"warmup": {k: {} for k, _, _ in KINDS}, "steady": {k: {} for k, _, _ in KINDS}}
errors = []
server_gone = threading.Event()


def record(phase, name, s):
    with lock:
        c = codes[phase][name]
        c[str(s)] = c.get(str(s), 0) + 1


def call(phase, name, fn):
    try:
        record(phase, name, fn())
    except Exception as e:  # noqa: BLE001 - every failure is a finding
        with lock:
            errors.append(f"{phase} {name}: {type(e).__name__}: {e}")


def proc_status():
    """(VmRSS MB, VmHWM MB, open FDs) of the server."""
    with open(f"/proc/{args.pid}/status") as f:
        kb = {l.split(":")[0]: int(l.split()[1]) for l in f if l.startswith(("VmRSS:", "VmHWM:"))}
    fds = len(os.listdir(f"/proc/{args.pid}/fd"))
    return kb["VmRSS"] / 1024.0, kb["VmHWM"] / 1024.0, fds


# --- sampling ---------------------------------------------------------------

samples = []
phase = "warmup"
t0 = time.monotonic()
stop_sampling = threading.Event()
resample = threading.Event()  # sample now and restart the schedule


def take_sample():
    try:
        rss, hwm, fds = proc_status()
    except (OSError, KeyError) as e:
        if not server_gone.is_set():
            server_gone.set()
            with lock:
                errors.append(f"the server process is gone: {e}")
        return
    now = time.monotonic() - t0
    with lock:
        samples.append({"t_s": round(now, 1), "phase": phase, "rss_mb": round(rss, 1), "hwm_mb": round(hwm, 1), "fds": fds})
    print(f"soak[{args.label}]: t={now:6.0f}s {phase:6} rss={rss:7.1f} MB hwm={hwm:7.1f} MB fds={fds}", file=sys.stderr, flush=True)


def sampler():
    while not stop_sampling.is_set():
        take_sample()
        if resample.wait(args.interval):
            resample.clear()


# --- warm-up ----------------------------------------------------------------

HEAVY = ["transcription", "summary", "chat_stream"]


def wave(kinds, rng_seed):
    """Every client sends one request at once (kinds[i] from client i); a
    "bad" client sends every bad request in turn."""
    barrier = threading.Barrier(len(kinds))

    def one(i, kind):
        rng = random.Random(rng_seed * 1000 + i)
        barrier.wait()
        if kind == "bad":
            for j, b in enumerate(BAD):
                call("warmup", "bad", lambda b=b: check_bad(b(rng)[0]))
        else:
            call("warmup", kind, lambda: FNS[kind](rng, largest=True))

    ts = [threading.Thread(target=one, args=(i, k), daemon=True) for i, k in enumerate(kinds)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def peak_mb():
    try:
        return proc_status()[1]
    except (OSError, KeyError) as e:
        if not server_gone.is_set():
            server_gone.set()
            with lock:
                errors.append(f"the server process is gone: {e}")
        return float("nan")


def warmup():
    waves = [list(c) for c in itertools.combinations_with_replacement(HEAVY, args.clients)]
    waves.append(["bad"] * args.clients)
    rounds = []
    start = time.monotonic()
    for r in range(args.warmup_max_rounds):
        before = peak_mb()
        t = time.monotonic()
        per_wave = []
        for i, kinds in enumerate(waves):
            tw = time.monotonic()
            wave(kinds, args.seed + 7919 * r + i)
            if server_gone.is_set():
                break
            per_wave.append({"kinds": "+".join(kinds), "seconds": round(time.monotonic() - tw, 1),
                             "hwm_mb": round(peak_mb(), 1)})
        if server_gone.is_set():
            break
        after = peak_mb()
        rounds.append({"waves": len(waves), "seconds": round(time.monotonic() - t, 1),
                       "hwm_before_mb": round(before, 1), "hwm_after_mb": round(after, 1),
                       "hwm_rise_mb": round(after - before, 1), "per_wave": per_wave})
        print(f"soak[{args.label}]: warm-up round {r + 1}: {len(waves)} waves in {time.monotonic() - t:.0f} s, "
              f"peak RSS {before:.1f} -> {after:.1f} MB", file=sys.stderr, flush=True)
        if r + 1 >= args.warmup_rounds and after - before <= args.warmup_settle:
            break
    converged = bool(rounds) and rounds[-1]["hwm_rise_mb"] <= args.warmup_settle and len(rounds) >= args.warmup_rounds
    return {"rounds": rounds, "converged": converged, "seconds": round(time.monotonic() - start, 1),
            "waves_per_round": len(waves)}


# --- steady load ------------------------------------------------------------


def client(i, end):
    rng = random.Random(args.seed * 1000 + 100 + i)
    while time.monotonic() < end and not server_gone.is_set():
        name, fn, _ = rng.choices(KINDS, WEIGHTS)[0]
        call("steady", name, lambda: fn(rng))
        time.sleep(rng.uniform(0.05, 0.5))


# --- statistics -------------------------------------------------------------


def slope(points):
    """Least-squares slope of (minutes, value) points, per minute."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0


def thirds_rise(points):
    """Median of the values in the last third of the window (by time) minus
    the median of those in the first third."""
    if len(points) < 3:
        return 0.0
    a, b = points[0][0], points[-1][0]
    w = (b - a) / 3
    first = [y for x, y in points if x <= a + w]
    last = [y for x, y in points if x >= b - w]
    return statistics.median(last) - statistics.median(first)


threading.Thread(target=sampler, daemon=True).start()
warm = warmup()
phase = "steady"
steady_t0 = time.monotonic()
end = steady_t0 + args.minutes * 60
resample.set()
threads = [threading.Thread(target=client, args=(i, end), daemon=True) for i in range(args.clients)]
for t in threads:
    t.start()
while time.monotonic() < end and not server_gone.is_set():
    time.sleep(min(1.0, max(0.0, end - time.monotonic())))
for t in threads:
    t.join(timeout=900)
steady_s = time.monotonic() - steady_t0
resample.set()  # a last sample at the end of the window
time.sleep(0.5)
stop_sampling.set()
resample.set()

with lock:
    series = list(samples)
steady = [s for s in series if s["phase"] == "steady"]
rss_pts = [(s["t_s"] / 60, s["rss_mb"]) for s in steady]
fd_pts = [(s["t_s"] / 60, s["fds"]) for s in steady]
rss_slope, rss_rise = slope(rss_pts), thirds_rise(rss_pts)
fd_slope, fd_rise = slope(fd_pts), thirds_rise(fd_pts)
judged = len(steady) >= 6 and steady[-1]["t_s"] - steady[0]["t_s"] >= 120
five_xx = {ph: {k: {c: n for c, n in v.items() if c.startswith("5") and c != "503"} for k, v in per.items()} for ph, per in codes.items()}
five_xx = {f"{ph} {k}": v for ph, per in five_xx.items() for k, v in per.items() if v}
failures = []
if five_xx:
    failures.append(f"5xx other than 503: {five_xx}")
if errors:
    failures.append(f"{len(errors)} client-side errors, first: {errors[:3]}")
if judged and rss_slope > args.max_rss_slope and rss_rise > args.max_rss_rise:
    failures.append(f"RSS grows {rss_slope:.2f} MB/min (limit {args.max_rss_slope}) and its last third's median is "
                    f"{rss_rise:.1f} MB above its first third's (limit {args.max_rss_rise})")
if judged and fd_slope > args.max_fd_slope:
    failures.append(f"open FDs grow {fd_slope:.2f}/min (limit {args.max_fd_slope})")
steady_requests = sum(sum(v.values()) for v in codes["steady"].values())
warm_requests = sum(sum(v.values()) for v in codes["warmup"].values())


def span(key, pts):
    vals = [s[key] for s in pts]
    return {"start": vals[0], "end": vals[-1], "min": min(vals), "max": max(vals)} if vals else None


report = {
    "label": args.label,
    "minutes": args.minutes,
    "clients": args.clients,
    "seed": args.seed,
    "requests": steady_requests,
    "requests_per_s": round(steady_requests / max(1e-9, steady_s), 2),
    "codes": codes["steady"],
    "warmup": dict(warm, requests=warm_requests, codes=codes["warmup"]),
    "client_errors": len(errors),
    "errors": errors[:20],
    "samples": len(series),
    "steady_samples": len(steady),
    "rss_mb": span("rss_mb", steady),
    "rss_mb_before_load": series[0]["rss_mb"] if series else None,
    "hwm_mb": span("hwm_mb", steady),
    "fds": span("fds", steady),
    "rss_slope_mb_per_min": round(rss_slope, 3),
    "rss_rise_thirds_mb": round(rss_rise, 1),
    "fd_slope_per_min": round(fd_slope, 3),
    "fd_rise_thirds": round(fd_rise, 1),
    "trend_judged": judged,
    "limits": {"rss_mb_per_min": args.max_rss_slope, "rss_rise_thirds_mb": args.max_rss_rise,
               "fds_per_min": args.max_fd_slope},
    "failures": failures,
    "series": series,
}
text = json.dumps(report, indent=1)
if args.report:
    with open(args.report, "w") as f:
        f.write(text + "\n")
print(text)
sys.exit(1 if failures else 0)

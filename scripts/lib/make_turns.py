"""Writes a multi-speaker recording with known turns, for diarization tests.

espeak-ng voices take turns reading sentences, with pauses between turns
and one stretch where two talk at once; the reference RTTM holds each
utterance's true span (the voice's own audio, trimmed of its leading and
trailing silence), so a diarizer can be scored against it.

    python3 make_turns.py OUT_DIR [--speakers 2|3] [--seed 1]

writes OUT_DIR/turns-<n>spk.wav (16 kHz mono s16) and .rttm.
"""
import argparse, os, random, struct, subprocess, tempfile, wave

RATE = 16000
# (voice, pitch, words per minute, sox effects). espeak-ng's voices share
# one synthesizer, so a speaker-embedding network hears its male variants
# as one person; the third voice is resampled (`speed`), which scales
# every formant like a longer vocal tract: a different body, not a
# different accent.
VOICES = [
    ("en-us", 35, 160, []),
    ("en+f3", 75, 150, []),
    ("en-us+m3", 50, 190, ["speed", "1.25"]),
]
LINES = [
    "Good morning, let's start with the budget for the next quarter.",
    "I looked at the numbers and we are about ten percent over.",
    "Then we should delay the new office until the spring.",
    "I agree, but the hiring plan has to stay as it is.",
    "Can you send the revised forecast to the team by Friday?",
    "Yes, I will have it ready on Thursday afternoon.",
    "What about the marketing campaign for the launch?",
    "We can cut the print ads and keep the online part.",
    "That sounds reasonable to me, let's write it down.",
    "One more thing, the client meeting moved to Monday.",
    "Fine, I will update the calendar after this call.",
    "Great, thanks everyone, talk to you next week.",
]


def speak(text, voice, pitch, wpm, effects, tmp):
    raw = os.path.join(tmp, "u.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(wpm), "-w", raw, text], check=True)
    out = os.path.join(tmp, "u16.wav")
    subprocess.run(["sox", raw, "-r", str(RATE), "-c", "1", "-b", "16", out] + effects, check=True)
    with wave.open(out) as w:
        data = w.readframes(w.getnframes())
    return trim(list(struct.unpack("<%dh" % (len(data) // 2), data)))


def trim(s, thr=300):
    """Samples without leading and trailing silence, so the reference
    spans are the speech itself."""
    first = next((i for i, v in enumerate(s) if abs(v) > thr), 0)
    last = len(s) - next((i for i, v in enumerate(reversed(s)) if abs(v) > thr), 0)
    return s[first:last]


def write(out_dir, name, mix, ref):
    """Writes out_dir/name.wav (16 kHz mono s16, `mix` scaled under full
    scale) and name.rttm, one line per (start s, duration s, label) of
    `ref`; returns the .wav's path."""
    peak = max(1, max(abs(x) for x in mix))
    scale = min(1.0, 30000 / peak)
    base = os.path.join(out_dir, name)
    with wave.open(base + ".wav", "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(struct.pack("<%dh" % len(mix), *(int(x * scale) for x in mix)))
    with open(base + ".rttm", "w") as f:
        for start, dur, label in ref:
            f.write(f"SPEAKER {name} 1 {start:.3f} {dur:.3f} <NA> <NA> {label} <NA> <NA>\n")
    return base + ".wav"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--speakers", type=int, default=2, choices=[2, 3])
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    os.makedirs(a.out, exist_ok=True)
    order = [i % a.speakers for i in range(len(LINES))]
    if a.speakers == 3:
        order = [0, 1, 0, 2, 1, 2, 0, 1, 2, 0, 2, 1]
    mix = []
    turns = []
    t = int(0.5 * RATE)
    with tempfile.TemporaryDirectory() as tmp:
        for k, (line, spk) in enumerate(zip(LINES, order)):
            v, p, wpm, fx = VOICES[spk]
            u = speak(line, v, p, wpm, fx, tmp)
            start = t
            if k == 5:
                # The one overlap: this speaker starts 1.2 s before the last one ends.
                start = max(0, t - int(1.2 * RATE) - int(rng.uniform(0.3, 0.8) * RATE))
            end = start + len(u)
            if len(mix) < end:
                mix.extend([0] * (end - len(mix)))
            for i, v16 in enumerate(u):
                mix[start + i] += v16
            turns.append((start / RATE, len(u) / RATE, spk))
            t = max(t, end) + int(rng.uniform(0.4, 1.0) * RATE)
    mix.extend([0] * int(0.5 * RATE))
    ref = [(start, dur, f"voice{spk}") for start, dur, spk in turns]
    print(write(a.out, f"turns-{a.speakers}spk", mix, ref))


if __name__ == "__main__":
    main()

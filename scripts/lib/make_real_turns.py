"""Writes a multi-speaker recording of real recorded voices with known turns.

Asterisk's prompt packages hold hundreds of studio recordings per voice
(en_US_f_Allison, fr_CA_f_June, it_IT_m_Carlo, ru_RU_f_IvrvoiceRU, ...);
this script lets chosen voices take turns, each turn one or two prompts,
with pauses between turns and one stretch where two talk at once. Unlike
espeak-ng's voices these are different people (three of them women), so
it scores a diarizer on real voices that do not differ by synthesizer
settings. The reference RTTM holds each prompt's own span (its leading and
trailing silence trimmed), so the pause between two prompts of one turn is
not counted as speech.

    python3 make_real_turns.py SOUNDS_DIR OUT_DIR --voices A,B[,C...]
        [--turns 16] [--seed 1] [--name NAME]

SOUNDS_DIR holds one folder per voice (usr/share/asterisk/sounds of the
extracted .debs); writes OUT_DIR/NAME.wav (16 kHz mono s16) and .rttm.
"""
import argparse, os, random, struct, subprocess, tempfile, wave

# The espeak-ng generator's trimming and writing (this script's folder is
# on sys.path when it runs).
from make_turns import RATE, trim, write

MIN_S, MAX_S = 1.5, 6.0


def load(path, tmp):
    out = os.path.join(tmp, "p16.wav")
    # -D: no dither, so the same packages give the same file every run.
    subprocess.run(["sox", "-D", path, "-r", str(RATE), "-c", "1", "-b", "16", out], check=True)
    with wave.open(out) as w:
        data = w.readframes(w.getnframes())
    return trim(list(struct.unpack("<%dh" % (len(data) // 2), data)))


def prompts(voice_dir):
    """Prompt files of one voice, 1.5-6 s long, sorted (deterministic)."""
    out = []
    for root, _, files in os.walk(voice_dir):
        for f in files:
            if not f.endswith(".wav"):
                continue
            p = os.path.join(root, f)
            with wave.open(p) as w:
                secs = w.getnframes() / w.getframerate()
            if MIN_S <= secs <= MAX_S:
                out.append(p)
    return sorted(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("sounds")
    ap.add_argument("out")
    ap.add_argument("--voices", required=True)
    ap.add_argument("--turns", type=int, default=16)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--name")
    a = ap.parse_args()
    voices = a.voices.split(",")
    name = a.name or "real-%dspk" % len(voices)
    rng = random.Random(a.seed)
    pools = {v: prompts(os.path.join(a.sounds, v)) for v in voices}
    for v, p in pools.items():
        if len(p) < 2 * a.turns:
            raise SystemExit(f"{v}: only {len(p)} prompts of {MIN_S}-{MAX_S} s")
        rng.shuffle(p)
    # Every voice speaks; no voice takes two turns in a row.
    order = []
    while len(order) < a.turns:
        nxt = rng.choice([i for i in range(len(voices)) if not order or i != order[-1]])
        order.append(nxt)
    for i in range(len(voices)):
        if i not in order:
            order[rng.randrange(a.turns)] = i
    mix, ref = [], []
    t = int(0.5 * RATE)
    with tempfile.TemporaryDirectory() as tmp:
        for k, spk in enumerate(order):
            v = voices[spk]
            start = t
            if k == 5:
                # The one overlap: this turn starts before the last one ends.
                start = max(0, t - int(rng.uniform(1.0, 2.0) * RATE))
            pos = start
            for j in range(rng.choice([1, 2])):
                u = load(pools[v].pop(), tmp)
                if j:
                    pos += int(rng.uniform(0.2, 0.4) * RATE)
                if len(mix) < pos + len(u):
                    mix.extend([0] * (pos + len(u) - len(mix)))
                for i, x in enumerate(u):
                    mix[pos + i] += x
                ref.append((pos / RATE, len(u) / RATE, v))
                pos += len(u)
            t = max(t, pos) + int(rng.uniform(0.4, 1.2) * RATE)
    mix.extend([0] * int(0.5 * RATE))
    os.makedirs(a.out, exist_ok=True)
    print(write(a.out, name, mix, ref))


if __name__ == "__main__":
    main()

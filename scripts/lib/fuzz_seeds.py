"""Seed corpora for scripts/fuzz (issue 19): small inputs, generated here
rather than committed, that already reach deep into each parser.

    python3 scripts/lib/fuzz_seeds.py TARGET OUT_DIR [FIXTURES_DIR]

`ct2_model` and `gguf` seeds are written by the fuzz targets themselves
(EARSHOT_FUZZ_SEED_DIR, with the tests' Rust fixture writers); this file
covers the others. Audio seeds are a few synthetic tones in every container
(ffmpeg when present, else WAV only) plus the first few KB of each clip in
target/fixtures. Every seed starts with the target's selector byte.
"""

import io
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import wave

# fuzz/fuzz_targets/audio.rs HINTS, in order.
AUDIO_HINTS = [None, "wav", "flac", "mp3", "ogg", "opus", "webm", "mp4", "m4a", "mkv", "aac", "txt"]
# Truncated fixtures keep their headers and first frames; bigger seeds only
# slow the mutator down.
FIXTURE_BYTES = 6144


def hint_byte(ext):
    ext = (ext or "").lower()
    return AUDIO_HINTS.index(ext) if ext in AUDIO_HINTS else 0


def write(out, name, data):
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)


def tone_wav(rate=16000, channels=1, width=2, seconds=0.05):
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        n = int(rate * seconds)
        frames = bytearray()
        for i in range(n):
            v = math.sin(2 * math.pi * 440 * i / rate)
            for _ in range(channels):
                if width == 1:
                    frames += struct.pack("<B", int(128 + 100 * v))
                else:
                    frames += struct.pack("<h", int(20000 * v))
        w.writeframes(bytes(frames))
    return buf.getvalue()


def float_wav(rate=16000, seconds=0.02):
    """IEEE float WAV (format 3), which Python's wave module cannot write."""
    n = int(rate * seconds)
    data = b"".join(struct.pack("<f", math.sin(i / 5)) for i in range(n))
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def audio(out, fixtures):
    seeds = {
        "s16.wav": tone_wav(),
        "u8-8k.wav": tone_wav(rate=8000, width=1),
        "stereo-44k.wav": tone_wav(rate=44100, channels=2, seconds=0.01),
        "f32.wav": float_wav(),
    }
    for name, data in seeds.items():
        write(out, name, bytes([hint_byte("wav")]) + data)
    if shutil.which("ffmpeg"):
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "src.wav")
            with open(src, "wb") as f:
                f.write(tone_wav(rate=16000, seconds=0.3))
            for ext, args in [
                ("flac", []),
                ("mp3", ["-b:a", "32k"]),
                ("ogg", ["-c:a", "libvorbis", "-q:a", "0"]),
                ("opus", ["-c:a", "libopus", "-b:a", "12k"]),
                ("webm", ["-c:a", "libopus", "-b:a", "12k"]),
                ("m4a", ["-c:a", "aac", "-b:a", "24k"]),
            ]:
                dst = os.path.join(tmp, "tone." + ext)
                r = subprocess.run(
                    ["ffmpeg", "-v", "error", "-y", "-i", src, *args, dst],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                if r.returncode == 0:
                    with open(dst, "rb") as f:
                        write(out, "tone-" + ext, bytes([hint_byte(ext)]) + f.read()[:FIXTURE_BYTES])
    if fixtures and os.path.isdir(fixtures):
        for name in sorted(os.listdir(fixtures)):
            path = os.path.join(fixtures, name)
            ext = name.rsplit(".", 1)[-1] if "." in name else ""
            if name.startswith(".") or not os.path.isfile(path) or ext in ("tsv", "txt"):
                continue
            with open(path, "rb") as f:
                head = f.read(FIXTURE_BYTES)
            if head:
                write(out, "fixture-" + name, bytes([hint_byte(ext)]) + head)


def job_message(out):
    # Selector byte: 0 = no `task` attribute, 1 = transcribe, 2 = summarize.
    jobs = [
        (1, {"version": 1, "job_id": "j-1", "task": "transcribe", "audio": "s3://bucket/in/a.wav",
             "result": "s3://bucket/out/j-1.json",
             "options": {"language": "en", "formats": ["json", "srt"], "word_timestamps": True,
                         "max_words_per_cue": 4}}),
        (2, {"version": 1, "job_id": "j-2", "task": "summarize", "text": "A meeting. It ended."}),
        (0, {"version": 1, "job_id": "j-3", "task": "summarize", "transcript": "file:///tmp/t.json",
             "options": {"max_summary_tokens": 64}}),
        (0, {"version": 1, "job_id": "j-4", "task": "transcribe_summarize", "audio": "/data/a.flac"}),
    ]
    for i, (sel, job) in enumerate(jobs):
        write(out, f"job-{i}.json", bytes([sel]) + json.dumps(job).encode())


def transcribe_json(out):
    doc = {
        "jobName": "demo",
        "accountId": "000000000000",
        "status": "COMPLETED",
        "results": {
            "language_code": "en-US",
            "transcripts": [{"transcript": "Hello there. Bye."}],
            "items": [
                {"id": 0, "type": "pronunciation", "start_time": "0.10", "end_time": "0.50",
                 "alternatives": [{"confidence": "0.99", "content": "Hello"}]},
                {"id": 1, "type": "pronunciation", "start_time": "0.55", "end_time": "0.90",
                 "alternatives": [{"confidence": "0.9", "content": "there"}]},
                {"id": 2, "type": "punctuation", "alternatives": [{"confidence": "0.0", "content": "."}]},
                {"id": 3, "type": "pronunciation", "start_time": "1.2", "end_time": "1.5",
                 "alternatives": [{"confidence": "1.0", "content": "Bye"}]},
                {"id": 4, "type": "punctuation", "alternatives": [{"confidence": "0.0", "content": "."}]},
            ],
            "audio_segments": [
                {"id": 0, "transcript": "Hello there.", "start_time": "0.10", "end_time": "0.90",
                 "items": [0, 1, 2]},
                {"id": 1, "transcript": "Bye.", "start_time": "1.2", "end_time": "1.5", "items": [3, 4]},
            ],
        },
    }
    write(out, "full.json", json.dumps(doc).encode())
    old = json.loads(json.dumps(doc))
    del old["results"]["audio_segments"]
    for it in old["results"]["items"]:
        it.pop("id", None)
    old["results"].pop("language_code")
    old["results"]["language_identification"] = [{"code": "de-DE", "score": "0.8"}]
    write(out, "legacy.json", json.dumps(old).encode())


def http_request(out):
    # Selector: 0 = multipart (Content-Type line, then body), 1 = chat, 2 = summarize.
    b = "XyZ"
    parts = [
        ("file", 'filename="talk.wav"', tone_wav(seconds=0.005)),
        ("model", None, b"whisper-1"),
        ("language", None, b"en"),
        ("prompt", None, "caf\u00e9".encode()),
        ("temperature", None, b"0.2"),
        ("response_format", None, b"verbose_json"),
        ("timestamp_granularities[]", None, b"word"),
        ("max_words_per_cue", None, b"3"),
        ("max_tokens", None, b"64"),
    ]
    body = b""
    for name, extra, data in parts:
        disp = f'form-data; name="{name}"' + (f"; {extra}" if extra else "")
        body += f"--{b}\r\nContent-Disposition: {disp}\r\n\r\n".encode() + data + b"\r\n"
    body += f"--{b}--\r\n".encode()
    write(out, "form", b"\x00" + f"multipart/form-data; boundary={b}\n".encode() + body)
    chat = {"model": "m", "messages": [{"role": "system", "content": "Be brief."},
                                       {"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
            "stream": True, "max_tokens": 8, "temperature": 0.5, "top_p": 0.9, "seed": 1,
            "stop": ["\n"], "n": 1}
    write(out, "chat", b"\x01" + json.dumps(chat).encode())
    write(out, "summarize", b"\x02" + json.dumps({"text": '{"segments":[{"text":"a"}]}', "max_tokens": 5}).encode())


def main():
    target, out = sys.argv[1], sys.argv[2]
    fixtures = sys.argv[3] if len(sys.argv) > 3 else None
    os.makedirs(out, exist_ok=True)
    if target == "audio":
        audio(out, fixtures)
    elif target == "job_message":
        job_message(out)
    elif target == "transcribe_json":
        transcribe_json(out)
    elif target == "http_request":
        http_request(out)
    # ct2_model and gguf: written by the targets (EARSHOT_FUZZ_SEED_DIR).


if __name__ == "__main__":
    main()

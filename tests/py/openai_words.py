"""Word timestamps through the official OpenAI Python client, as OpenAI's
API gives them. Run by tests/server.rs:

    python openai_words.py BASE_URL SAMPLE_WAV

Prints one JSON object with what it saw; exits non-zero on the first
failed expectation."""
import json
import re
import sys

import openai

base, sample = sys.argv[1:3]
client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=300)
with open(sample, "rb") as f:
    audio = f.read()
seen = {}


def norm(text):
    return re.sub(r"[^a-z0-9 ]+", " ", text.lower().replace("'", "")).split()


# timestamp_granularities=["word"] with verbose_json: the flat `words` array.
verbose = client.audio.transcriptions.create(
    model="whisper-1",
    file=("sample.wav", audio),
    response_format="verbose_json",
    timestamp_granularities=["word"],
)
words = verbose.words
assert words, f"no words: {verbose}"
prev = 0.0
for i, w in enumerate(words):
    assert w.word and w.word == w.word.strip(), (i, w)
    assert 0.0 <= w.start <= w.end <= verbose.duration + 0.01, (i, w, verbose.duration)
    assert w.start >= prev - 1e-6, ("starts out of order", i, w, prev)
    prev = w.start
assert norm(" ".join(w.word for w in words)) == norm(verbose.text), (
    [w.word for w in words],
    verbose.text,
)
# earshot always returns segments too (OpenAI does with ["word", "segment"]).
assert verbose.segments and len(verbose.segments) >= 3, verbose
seen["words"] = len(words)
seen["first"] = [words[0].word, words[0].start, words[0].end]
seen["last_end"] = words[-1].end
seen["duration"] = verbose.duration

# Both granularities: the same words.
both = client.audio.transcriptions.create(
    model="whisper-1",
    file=("sample.wav", audio),
    response_format="verbose_json",
    timestamp_granularities=["word", "segment"],
)
assert [(w.word, w.start, w.end) for w in both.words] == [(w.word, w.start, w.end) for w in words]

# Segments only: no word pass, no `words`.
plain = client.audio.transcriptions.create(
    model="whisper-1",
    file=("sample.wav", audio),
    response_format="verbose_json",
    timestamp_granularities=["segment"],
)
assert not getattr(plain, "words", None), plain.words

# Word granularity with another format: 400, as OpenAI answers it.
for fmt in ("json", "srt"):
    try:
        client.audio.transcriptions.create(
            model="whisper-1",
            file=("sample.wav", audio),
            response_format=fmt,
            timestamp_granularities=["word"],
        )
        raise AssertionError(f"word granularity accepted with {fmt}")
    except openai.BadRequestError as e:
        assert e.status_code == 400 and e.body["type"] == "invalid_request_error", e.body
        assert e.body["param"] == "timestamp_granularities", e.body
        assert "verbose_json" in e.body["message"], e.body
        seen["bad_" + fmt] = e.body["message"]

print(json.dumps(seen))

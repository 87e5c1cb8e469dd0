"""Drives `earshot serve` with the official OpenAI Python client (and plain
HTTP for what the client does not cover). Run by tests/server.rs:

    python openai_client.py BASE_URL API_KEY SAMPLE_WAV NOT_AUDIO

Prints one JSON object with what it saw; exits non-zero on the first
failed expectation."""
import json
import sys
import urllib.error
import urllib.request

import openai

base, key, sample, not_audio = sys.argv[1:5]
client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=300)
seen = {}

# Transcriptions in every response format.
with open(sample, "rb") as f:
    audio = f.read()
tr = client.audio.transcriptions.create(model="whisper-1", file=("sample.wav", audio))
assert "launch" in tr.text.lower(), tr.text
seen["json"] = tr.text
text = client.audio.transcriptions.create(model="tiny.en", file=("sample.wav", audio), response_format="text")
assert isinstance(text, str) and text.strip() == tr.text.strip(), (text, tr.text)
srt = client.audio.transcriptions.create(model="whisper-1", file=("sample.wav", audio), response_format="srt")
assert srt.startswith("1\n00:00:00,000 --> "), srt[:80]
vtt = client.audio.transcriptions.create(model="whisper-1", file=("sample.wav", audio), response_format="vtt")
assert vtt.startswith("WEBVTT"), vtt[:40]
verbose = client.audio.transcriptions.create(
    model="whisper-1",
    file=("sample.wav", audio),
    response_format="verbose_json",
    timestamp_granularities=["segment"],
    language="en",
)
assert verbose.duration > 20 and len(verbose.segments) >= 3, verbose
assert verbose.segments[0].start == 0.0 and verbose.segments[-1].end <= verbose.duration + 0.5
seen["segments"] = len(verbose.segments)

# Chat completions, not streamed and streamed; greedy, so they agree.
messages = [{"role": "user", "content": "Name three colors."}]
done = client.chat.completions.create(model="smollm2-135m-instruct", messages=messages, max_tokens=24, temperature=0)
content = done.choices[0].message.content
assert content and done.choices[0].finish_reason in ("stop", "length"), done
assert done.usage.completion_tokens <= 24 and done.usage.prompt_tokens > 5, done.usage
parts, reasons = [], []
for chunk in client.chat.completions.create(
    model="smollm2-135m-instruct", messages=messages, max_tokens=24, temperature=0, stream=True
):
    delta = chunk.choices[0].delta
    if delta.content:
        parts.append(delta.content)
    if chunk.choices[0].finish_reason:
        reasons.append(chunk.choices[0].finish_reason)
assert "".join(parts) == content, ("".join(parts), content)
assert reasons == [done.choices[0].finish_reason], reasons
seen["chat"] = content
seen["stream_chunks"] = len(parts)

# Models.
ids = sorted(m.id for m in client.models.list())
assert ids == ["smollm2-135m-instruct", "tiny.en"], ids

# Bad input: 400 in OpenAI's error shape, surfaced by the client as BadRequestError.
with open(not_audio, "rb") as f:
    junk = f.read()
try:
    client.audio.transcriptions.create(model="whisper-1", file=("notes.txt", junk))
    raise AssertionError("non-audio was accepted")
except openai.BadRequestError as e:
    assert e.status_code == 400 and e.body["type"] == "invalid_request_error", e.body
    assert e.body["param"] == "file" and "audio" in e.body["message"], e.body
    seen["bad_audio"] = e.body["message"]
try:
    client.chat.completions.create(model="gpt-4o", messages=messages)
    raise AssertionError("unknown model accepted")
except openai.BadRequestError as e:
    assert e.body["param"] == "model", e.body

# Wrong key: 401 with a JSON body.
bad = openai.OpenAI(base_url=f"{base}/v1", api_key="wrong", max_retries=0)
try:
    bad.models.list()
    raise AssertionError("wrong key accepted")
except openai.AuthenticationError as e:
    assert e.status_code == 401, e


def post(path, body, headers):
    req = urllib.request.Request(base + path, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
status, body = post("/v1/summarize", json.dumps({"text": tr.text, "max_tokens": 60}).encode(), auth)
assert status == 200 and body["summary"] and body["usage"]["completion_tokens"] <= 60, body
seen["summary"] = body["summary"]
status, body = post("/v1/summarize", b"{not json", auth)
assert status == 400 and body["error"]["type"] == "invalid_request_error", body

# /v1/process: audio in, transcript and summary out (multipart, like the client sends).
boundary = "earshotprocessboundary"
form = (
    f"--{boundary}\r\nContent-Disposition: form-data; name=\"max_tokens\"\r\n\r\n60\r\n"
    f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"sample.wav\"\r\n"
    "Content-Type: audio/wav\r\n\r\n"
).encode() + audio + f"\r\n--{boundary}--\r\n".encode()
status, processed = post(
    "/v1/process",
    form,
    {"Authorization": f"Bearer {key}", "Content-Type": f"multipart/form-data; boundary={boundary}"},
)
assert status == 200, processed
assert processed["text"].strip() == tr.text.strip(), processed
assert processed["summary"] and len(processed["segments"]) >= 3, processed
seen["process_summary"] = processed["summary"]

print(json.dumps(seen))

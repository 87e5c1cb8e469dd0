"""Overload and limits against `earshot serve --queue-capacity 1
--max-batch 1 --max-body-bytes 2000000`:

    python overload.py BASE_URL BIG_WAV SMALL_WAV LONG_WAV

- a body over the limit gets 413 with a JSON error, and so does audio
  longer than --max-audio-seconds;
- 8 concurrent transcriptions against a queue of 1: each is either
  answered 200 or refused at once with 503 + Retry-After (never a hang,
  never another 5xx).
Prints {"ok": n, "busy": n}."""
import http.client
import json
import sys
import urllib.parse
import threading
import urllib.error
import urllib.request
import uuid

base, big, small, long_clip = sys.argv[1:5]


def multipart(path):
    boundary = uuid.uuid4().hex
    with open(path, "rb") as f:
        data = f.read()
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
        "Content-Type: audio/wav\r\n\r\n"
    ).encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def post(path):
    body, ctype = multipart(path)
    req = urllib.request.Request(
        base + "/v1/audio/transcriptions", data=body, headers={"Content-Type": ctype}, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, json.loads(e.read())


# Over the limit: refused from the headers, before the body is read. Send
# the headers and only the start of the body, then read the answer.
body, ctype = multipart(big)
conn = http.client.HTTPConnection(urllib.parse.urlsplit(base).netloc, timeout=60)
conn.putrequest("POST", "/v1/audio/transcriptions")
conn.putheader("Content-Type", ctype)
conn.putheader("Content-Length", str(len(body)))
conn.endheaders()
conn.send(body[:65536])
resp = conn.getresponse()
answer = json.loads(resp.read())
assert resp.status == 413, (resp.status, answer)
assert answer["error"]["type"] == "invalid_request_error", answer
assert "limit" in answer["error"]["message"], answer
conn.close()

status, headers, body = post(long_clip)
assert status == 413 and "longer than" in body["error"]["message"], (status, body)
assert body["error"]["param"] == "file", body

results = []
lock = threading.Lock()


def one():
    r = post(small)
    with lock:
        results.append(r)


threads = [threading.Thread(target=one) for _ in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
ok = busy = 0
for status, headers, body in results:
    if status == 200:
        assert "launch" in body["text"].lower(), body
        ok += 1
    else:
        assert status == 503, (status, body)
        assert int(headers["retry-after"]) >= 1, headers
        assert body["error"]["type"] == "server_busy", body
        busy += 1
print(json.dumps({"ok": ok, "busy": busy}))

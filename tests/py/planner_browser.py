"""The planner page in a real browser (headless Chromium, driven over the
DevTools protocol with websocket-client):

    python planner_browser.py BASE_URL SCREENSHOT.png

- loads BASE_URL/planner and waits for the first plan;
- drags the tasks-per-month slider to its far end with real mouse events;
- checks that the GPU counts, costs, savings, phase and crossover on the
  page equal what POST /v1/plan returns for the page's new input, and that
  they changed;
- checks the page's Content-Security-Policy header, and that the browser
  reported no CSP violation and no script error;
- saves a screenshot.

Prints {"before": {...}, "after": {...}} on success; exits 1 with a
message otherwise."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import websocket

base, shot = sys.argv[1:3]
FIELDS = ["phase", "speech-gpus", "llm-gpus", "self-usd", "managed-usd", "hybrid-usd", "savings", "crossover"]


def fail(msg):
    print(msg, file=sys.stderr)
    sys.exit(1)


def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    fail("no Chromium: apt-get install -y chromium (scripts/test does)")


def group(n):
    return f"{int(n + 0.5) if n >= 0 else -int(-n + 0.5):,}"


def usd(v):
    return ("-$" if v < 0 else "$") + group(abs(v))


def expected(p):
    """The page's formatting of a plan."""
    c = p["crossover_tasks_per_month"]
    return {
        "phase": p["phase"],
        "speech-gpus": str(p["speech_gpus"]),
        "llm-gpus": str(p["llm_gpus"]),
        "self-usd": usd(p["self_hosted"]["monthly_usd"]),
        "managed-usd": usd(p["managed"]["monthly_usd"]),
        "hybrid-usd": usd(p["hybrid"]["monthly_usd"]),
        "savings": f"{p['savings_pct']:.1f}%",
        "crossover": "none up to 1,000,000,000 tasks/month" if c is None else f"{c:,} tasks/month",
    }


def post_plan(body):
    req = urllib.request.Request(
        base + "/v1/plan", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


class Page:
    """A minimal DevTools client: one page target, commands in order,
    events kept for later checks."""

    def __init__(self, ws_url):
        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self.next_id = 0
        self.events = []

    def call(self, method, **params):
        self.next_id += 1
        mine = self.next_id
        self.ws.send(json.dumps({"id": mine, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == mine:
                if "error" in msg:
                    fail(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def eval(self, expr):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            fail(f"{expr}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait(self, expr, timeout=20.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.eval(expr):
                return
            time.sleep(0.1)
        fail(f"timed out waiting for {expr}")

    def shown(self):
        return self.eval("JSON.stringify(Object.fromEntries(%s.map(id => [id, document.getElementById(id).textContent])))" % json.dumps(FIELDS))


# The page's own headers: a strict policy, no inline code allowed.
with urllib.request.urlopen(base + "/planner", timeout=30) as r:
    csp = r.headers.get("Content-Security-Policy", "")
for want in ("default-src 'none'", "script-src 'self'", "connect-src 'self'"):
    if want not in csp:
        fail(f"CSP {csp!r} lacks {want!r}")
if "unsafe-inline" in csp:
    fail(f"CSP allows inline code: {csp!r}")

profile = tempfile.mkdtemp(prefix="earshot-chromium-")
proc = subprocess.Popen(
    [
        chromium(),
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--remote-debugging-port=0",
        "--remote-allow-origins=*",
        f"--user-data-dir={profile}",
        "--window-size=1280,1100",
        "about:blank",
    ],
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
)
try:
    port_file = os.path.join(profile, "DevToolsActivePort")
    deadline = time.time() + 30
    while not (os.path.exists(port_file) and open(port_file).read().strip()):
        if time.time() > deadline or proc.poll() is not None:
            fail("Chromium did not start its DevTools endpoint")
        time.sleep(0.1)
    port = int(open(port_file).read().split()[0])
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
        targets = [t for t in json.loads(r.read()) if t["type"] == "page"]
    page = Page(targets[0]["webSocketDebuggerUrl"])
    page.call("Runtime.enable")
    page.call("Log.enable")
    page.call("Page.enable")
    page.call("Emulation.setDeviceMetricsOverride", width=1280, height=1100, deviceScaleFactor=1, mobile=False)
    page.call("Page.navigate", url=base + "/planner")
    page.wait("document.readyState === 'complete' && document.getElementById('out').dataset.state === 'ready'")
    before = json.loads(page.shown())
    first = json.loads(page.eval("document.getElementById('out').dataset.request"))
    want = expected(post_plan(first))
    if before != want:
        fail(f"first plan shown {before}, /v1/plan says {want}")

    # Drag the tasks slider's thumb to the far right with the mouse.
    box = page.eval(
        "(() => { const r = document.getElementById('tasks').getBoundingClientRect();"
        " return {x: r.left, y: r.top + r.height / 2, w: r.width}; })()"
    )
    value = page.eval("Number(document.getElementById('tasks').value)")
    start_x = box["x"] + box["w"] * value / 1000
    page.call("Input.dispatchMouseEvent", type="mousePressed", x=start_x, y=box["y"], button="left", clickCount=1)
    steps = 8
    for i in range(1, steps + 1):
        x = start_x + (box["x"] + box["w"] + 20 - start_x) * i / steps
        page.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=box["y"], button="left", buttons=1)
    page.call("Input.dispatchMouseEvent", type="mouseReleased", x=box["x"] + box["w"] + 20, y=box["y"], button="left", clickCount=1)
    page.wait(
        "(() => { const o = document.getElementById('out'); return o.dataset.state === 'ready'"
        " && JSON.parse(o.dataset.request).tasks_per_month !== %d; })()" % first["tasks_per_month"]
    )
    time.sleep(0.3)  # let a last debounced request land
    page.wait("document.getElementById('out').dataset.state === 'ready'")
    after = json.loads(page.shown())
    moved = json.loads(page.eval("document.getElementById('out').dataset.request"))
    if moved["tasks_per_month"] != 1_000_000:
        fail(f"the slider's far end should be 1,000,000 tasks, the page asked for {moved['tasks_per_month']}")
    want = expected(post_plan(moved))
    if after != want:
        fail(f"after the drag the page shows {after}, /v1/plan says {want}")
    for key in ("speech-gpus", "self-usd", "managed-usd"):
        if after[key] == before[key]:
            fail(f"{key} did not change: {before[key]}")
    drawn = page.eval("document.querySelectorAll('#chart polyline').length")
    if drawn != 3:
        fail(f"the chart has {drawn} lines, not 3")

    shot_b64 = page.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
    import base64

    os.makedirs(os.path.dirname(os.path.abspath(shot)), exist_ok=True)
    with open(shot, "wb") as f:
        f.write(base64.b64decode(shot_b64))

    # Anything the browser complained about: CSP violations, script errors.
    problems = []
    for ev in page.events:
        if ev["method"] == "Runtime.exceptionThrown":
            problems.append(ev["params"]["exceptionDetails"].get("text", "exception"))
        elif ev["method"] == "Log.entryAdded" and ev["params"]["entry"]["level"] == "error":
            entry = ev["params"]["entry"]
            problems.append(entry["text"] + (" " + entry["url"] if entry.get("url") else ""))
        elif ev["method"] == "Runtime.consoleAPICalled" and ev["params"]["type"] == "error":
            problems.append(json.dumps(ev["params"]["args"]))
    if problems:
        fail("the browser reported: " + "; ".join(problems))
    print(json.dumps({"before": before, "after": after}))
finally:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    shutil.rmtree(profile, ignore_errors=True)

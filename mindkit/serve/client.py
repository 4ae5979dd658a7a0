"""A small standard-library client for the server: JSON requests and Server-Sent-Event streams, with timings.

Used by scripts/serve_client.py, scripts/serve_load.py, benchmarks/bench_serve.py and the tests, so none of them
needs a third-party HTTP library.
"""
import http.client
import json
import time


class HTTPError(Exception):
    def __init__(self, status, body, headers):
        super().__init__(f"HTTP {status}: {body}")
        self.status, self.body, self.headers = status, body, headers


def _connect(base, timeout):
    host, _, port = base.replace("http://", "").split("/", 1)[0].partition(":")
    return http.client.HTTPConnection(host, int(port or 80), timeout=timeout)


def request(base, method, path, body=None, api_key=None, timeout=600, raw=None):
    """(status, parsed JSON body or text, headers). ``raw``: bytes to send instead of JSON."""
    conn = _connect(base, timeout)
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    payload = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    try:
        conn.request(method, path, body=payload, headers=headers)
        resp = conn.getresponse()
        text = resp.read().decode("utf-8", "replace")
        try:
            data = json.loads(text) if text else None
        except json.JSONDecodeError:
            data = text
        return resp.status, data, dict(resp.getheaders())
    finally:
        conn.close()


def post(base, path, body, api_key=None, timeout=600):
    """The JSON answer of a successful POST; HTTPError otherwise."""
    status, data, headers = request(base, "POST", path, body, api_key, timeout)
    if status != 200:
        raise HTTPError(status, data, headers)
    return data


def stream(base, path, body, api_key=None, timeout=600, stop_after=None, on_event=None):
    """POST with ``stream: true``; returns (events, arrival time of each, whether [DONE] came). ``stop_after``:
    close the connection after that many events (a client going away); ``on_event``: called with each event."""
    conn = _connect(base, timeout)
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    conn.request("POST", path, body=json.dumps({**body, "stream": True}).encode(), headers=headers)
    resp = conn.getresponse()
    if resp.status != 200:
        raise HTTPError(resp.status, resp.read().decode("utf-8", "replace"), dict(resp.getheaders()))
    events, times, done = [], [], False
    try:
        for line in resp:
            line = line.strip()
            if not line.startswith(b"data: "):
                continue
            if line == b"data: [DONE]":
                done = True
                break
            events.append(json.loads(line[6:]))
            times.append(time.perf_counter())
            if on_event is not None:
                on_event(events[-1])
            if stop_after is not None and len(events) >= stop_after:
                break
    finally:
        conn.close()
    return events, times, done


def stream_text(events, chat=False):
    """The concatenated text of stream chunks, per choice index."""
    texts = {}
    for e in events:
        for c in e.get("choices", []):
            piece = (c["delta"].get("content") or "") if chat else c["text"]
            texts[c["index"]] = texts.get(c["index"], "") + piece
    return texts


def metrics(base):
    from mindkit.serve.metrics import parse_metrics
    status, text, _ = request(base, "GET", "/metrics")
    if status != 200:
        raise HTTPError(status, text, {})
    return parse_metrics(text)


def wait_ready(base, timeout=300, proc=None):
    """Poll /health until 200; ``proc``: a server process whose early exit ends the wait."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode}")
        try:
            if request(base, "GET", "/health", timeout=5)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{base} not ready after {timeout} s")

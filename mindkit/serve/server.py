"""HTTP on the standard library: a thread per connection (``ThreadingHTTPServer``), the engine on the main thread.

A handler thread validates, submits its requests to the scheduler and relays the events to its client, as one
JSON body or as Server-Sent Events (chunked, ending with ``data: [DONE]``). A client gone mid-stream cancels its
requests. Every failure is an OpenAI error body; the server keeps serving.
"""
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from mindkit.serve.protocol import ApiError
from mindkit.serve.responses import Collector
from mindkit.serve.scheduler import Request, new_sink

logger = logging.getLogger("mindkit")
MAX_BODY = 16 << 20


class App:
    """What the handlers share: the model info, the scheduler once the model is loaded, metrics, options."""

    def __init__(self, info, metrics, serve_config):
        self.info, self.metrics, self.config = info, metrics, serve_config
        self.scheduler = None

    @property
    def ready(self):
        return self.scheduler is not None and not self.scheduler.draining

    def check_ready(self):
        if self.scheduler is None:
            raise ApiError("the model is still loading", status=503, type="service_unavailable",
                           headers={"Retry-After": str(self.config.retry_after)})

    def run(self, prompts, params, chat):
        """Submit prompts x n choices; returns (requests, sink, collector)."""
        self.check_ready()
        sink, tok = new_sink(), self.info.tokenizer
        reqs = [Request(p, params, sink, tok, index=i * params.n + j, seed_offset=j)
                for i, p in enumerate(prompts) for j in range(params.n)]
        self.scheduler.submit(reqs)
        return reqs, sink, Collector(self.info.name, len(reqs), chat, tok, params.n)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mindkit"
    app: App = None

    def log_message(self, fmt, *args):
        logger.debug("%s %s", self.address_string(), fmt % args)

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_PUT(self):
        self.dispatch("PUT")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def do_PATCH(self):
        self.dispatch("PATCH")

    def dispatch(self, method):
        from mindkit.serve.routes import ROUTES, PUBLIC
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        try:
            self.raw = self.read_body()
            methods = ROUTES.get(path)
            if methods is None:
                raise ApiError(f"no route {path}", status=404, type="not_found_error")
            if method not in methods:
                raise ApiError(f"{method} is not allowed on {path}; use {', '.join(methods)}", status=405,
                               type="method_not_allowed", headers={"Allow": ", ".join(methods)})
            if path not in PUBLIC:
                self.check_key()
            methods[method](self)
        except ApiError as e:
            self.send_error_body(e)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as e:  # a bug of ours: the client gets a 500, the server goes on
            logger.error("internal error on %s %s: %s", method, path, e, exc_info=True)
            self.send_error_body(ApiError(f"internal error: {type(e).__name__}: {e}", status=500,
                                          type="internal_server_error"))

    def check_key(self):
        key = self.app.config.api_key
        if key and self.headers.get("Authorization", "") != f"Bearer {key}":
            raise ApiError("invalid or missing API key (Authorization: Bearer <key>)", status=401,
                           type="authentication_error", code="invalid_api_key")

    def read_body(self):
        """Read the whole body first, so an error answered early leaves the connection usable."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True
            raise ApiError("Content-Length: expected an integer") from None
        if length > MAX_BODY:
            self.close_connection = True
            raise ApiError(f"request body of {length} bytes; expected at most {MAX_BODY}", status=413)
        return self.rfile.read(length) if length else b""

    def body(self):
        try:
            data = json.loads(self.raw or b"null")
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ApiError(f"the body is not valid JSON: {e}", code="invalid_json") from None
        if not isinstance(data, dict):
            raise ApiError(f"the body must be a JSON object, got {type(data).__name__}", code="invalid_json")
        return data

    def send_json(self, status, data, headers=None):
        self.send_bytes(status, json.dumps(data).encode(), "application/json", headers)

    def send_bytes(self, status, payload, content_type, headers=None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(payload)

    def send_error_body(self, err):
        if err.status >= 500 or err.status == 401:
            logger.warning("%s %s -> %d: %s", self.command, self.path, err.status, err.message)
        try:
            self.send_json(err.status, err.body(), err.headers)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def collect(self, reqs, sink, collector):
        """Wait for every choice to finish; returns the collector (its text complete)."""
        while collector.pending:
            event = sink.get()
            if "error" in event:
                self.app.scheduler.cancel(reqs)
                raise ApiError(event["error"], status=500, type="internal_server_error")
            collector.add(event)
        return collector

    def stream(self, reqs, sink, collector, include_usage):
        """Server-Sent Events, chunked; a client that goes away cancels its requests."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            while collector.pending:
                event = sink.get()
                if "error" in event:
                    self.app.scheduler.cancel(reqs)
                    self.write_event({"error": ApiError(event["error"], status=500).body()["error"]})
                    break
                for chunk in collector.add(event):
                    self.write_event(chunk)
            if include_usage and not collector.pending:
                self.write_event(collector.usage_chunk())
            self.write_chunk(b"data: [DONE]\n\n")
            self.write_chunk(b"")
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.app.scheduler.cancel(reqs)
            self.close_connection = True

    def write_event(self, data):
        self.write_chunk(b"data: " + json.dumps(data).encode() + b"\n\n")

    def write_chunk(self, payload):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(payload), payload))
        self.wfile.flush()


def start_server(app, host, port):
    """Listen and serve in a daemon thread; returns the server (``server.server_address`` has the real port)."""
    handler = type("BoundHandler", (Handler,), {"app": app})
    server_cls = type("Server", (ThreadingHTTPServer,), {"request_queue_size": 256})  # the default 5 resets bursts
    server = server_cls((host, port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="mindkit-http", daemon=True).start()
    return server


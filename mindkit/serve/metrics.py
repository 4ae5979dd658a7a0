"""Server metrics in Prometheus' text format (``GET /metrics``), named after vLLM's with a ``mindkit:`` prefix.

Latency histograms (time to first token, inter-token latency, end-to-end), the queue and the running batch, token
counters, and the engine's step counters: ``mindkit:decode_steps_total`` is what shows that concurrent requests
share decode steps.
"""
import bisect
import threading

LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                   20.0, 40.0, 80.0, 160.0)


class Histogram:
    def __init__(self, name, help_text, buckets=LATENCY_BUCKETS):
        self.name, self.help, self.buckets = name, help_text, tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)
        self.sum, self.count = 0.0, 0

    def observe(self, value):
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def lines(self, labels):
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        cumulative = 0
        for bound, n in zip(self.buckets + (float("inf"),), self.counts):
            cumulative += n
            le = "+Inf" if bound == float("inf") else repr(bound)
            out.append(f'{self.name}_bucket{{{labels},le="{le}"}} {cumulative}')
        out += [f"{self.name}_sum{{{labels}}} {self.sum}", f"{self.name}_count{{{labels}}} {self.count}"]
        return out


COUNTERS = {
    "prompt_tokens_total": "Prompt tokens prefilled.",
    "generation_tokens_total": "Tokens generated.",
    "request_success_total": "Requests finished (any finish reason but abort).",
    "request_aborted_total": "Requests cancelled by their client before finishing.",
    "request_rejected_total": "Requests refused with 503 because the queue was full or the server was draining.",
    "decode_steps_total": "Batched decode steps the engine ran (one per token position of the running batch).",
    "prefill_steps_total": "Prompts prefilled into the running batch.",
}


class Metrics:
    def __init__(self, model_name):
        self.labels = f'model_name="{model_name}"'
        self.lock = threading.Lock()
        self.ttft = Histogram("mindkit:time_to_first_token_seconds", "Time from arrival to the first token.")
        self.itl = Histogram("mindkit:inter_token_latency_seconds", "Time between two tokens of one request.")
        self.e2e = Histogram("mindkit:e2e_request_latency_seconds", "Time from arrival to the last token.")
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.waiting = self.running = 0

    def add(self, name, n=1):
        with self.lock:
            self.counters[name] += n

    def observe(self, histogram, value):
        with self.lock:
            getattr(self, histogram).observe(value)

    def set_load(self, waiting, running):
        self.waiting, self.running = waiting, running

    def render(self):
        with self.lock:
            out = ["# HELP mindkit:num_requests_waiting Requests queued for a batch row.",
                   "# TYPE mindkit:num_requests_waiting gauge",
                   f"mindkit:num_requests_waiting{{{self.labels}}} {self.waiting}",
                   "# HELP mindkit:num_requests_running Requests in the running batch.",
                   "# TYPE mindkit:num_requests_running gauge",
                   f"mindkit:num_requests_running{{{self.labels}}} {self.running}"]
            for name, help_text in COUNTERS.items():
                out += [f"# HELP mindkit:{name} {help_text}", f"# TYPE mindkit:{name} counter",
                        f"mindkit:{name}{{{self.labels}}} {self.counters[name]}"]
            for h in (self.ttft, self.itl, self.e2e):
                out += h.lines(self.labels)
        return "\n".join(out) + "\n"


def parse_metrics(text):
    """``{name: value}`` of a /metrics page's unlabelled-by-bucket samples (for tests and the load tool)."""
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "_bucket{" not in line:
            name, value = line.rsplit(" ", 1)
            values[name.split("{", 1)[0]] = float(value)
    return values

"""The scheduler (rank 0): the request queue, admission into the running batch, sampling, and what each request's
client hears.

Between two decode steps, waiting requests take free rows (continuous batching) as long as every row's remaining
tokens still fit in the cache's slots; the head of the queue that does not fit waits (first come, first served)
until a shift of the slots or the batch draining makes room. A cancelled request frees its row at the next step;
a slow client never holds the batch back (its events queue up on its own thread).
"""
import collections
import logging
import queue
import threading
import time

from mindkit.generation.config import GenerationConfig
from mindkit.generation.sampling import Sampler
from mindkit.serve.engine import Plan, share_plan
from mindkit.serve.protocol import ApiError
from mindkit.serve.text import TextTracker, top_logprobs

logger = logging.getLogger("mindkit")


class Request:
    """One completion choice: a prompt, its sampling settings and the queue its HTTP handler reads events from."""
    _ids = iter(range(1, 1 << 62))

    def __init__(self, prompt, params, sink, tokenizer, index=0, seed_offset=0):
        self.id, self.prompt, self.params, self.sink, self.index = next(Request._ids), prompt, params, sink, index
        seed = None if params.seed is None else params.seed + seed_offset
        self.sampler = Sampler(GenerationConfig(
            do_sample=not params.greedy, temperature=params.temperature or 1.0, top_k=params.top_k,
            top_p=params.top_p, repetition_penalty=params.repetition_penalty, seed=seed))
        self.seen = set(prompt) if params.repetition_penalty != 1.0 else ()
        self.text = TextTracker(tokenizer, params.stop)
        self.output, self.row, self.first_slot, self.cancelled = [], None, 0, False
        self.arrival, self.last_token_time = time.perf_counter(), None

    def remaining(self):
        """Decode steps this request still needs after its next token (each writes one slot)."""
        return self.params.max_tokens - len(self.output) - 1

    def sample(self, logits):
        token = int(self.sampler(logits[None], [self.seen])[0])
        if self.params.repetition_penalty != 1.0:
            self.seen.add(token)
        return token


class Scheduler:
    def __init__(self, engine, mesh, metrics, max_queue, eos_token_ids, retry_after=1):
        self.engine, self.mesh, self.metrics = engine, mesh, metrics
        self.max_queue, self.eos, self.retry_after = max_queue, set(eos_token_ids), retry_after
        self.waiting, self.running = collections.deque(), {}   # running: row -> Request
        self.cond = threading.Condition()
        self.draining = False

    # --- called from HTTP threads ---
    def submit(self, requests):
        with self.cond:
            if self.draining:
                self.metrics.add("request_rejected_total")
                raise ApiError("the server is shutting down", status=503, type="service_unavailable",
                               headers={"Retry-After": str(self.retry_after)})
            if len(self.waiting) + len(requests) > self.max_queue:
                self.metrics.add("request_rejected_total")
                raise ApiError(f"the queue is full ({len(self.waiting)} waiting, serve.max_queue = "
                               f"{self.max_queue}); retry later", status=503, type="service_unavailable",
                               headers={"Retry-After": str(self.retry_after)})
            self.waiting.extend(requests)
            self.metrics.set_load(len(self.waiting), len(self.running))
            self.cond.notify()

    def cancel(self, requests):
        with self.cond:
            for r in requests:
                r.cancelled = True
            self.cond.notify()

    def drain(self):
        """Refuse new requests; the loop ends once the queued and running ones are done."""
        with self.cond:
            self.draining = True
            self.cond.notify()

    # --- the engine thread ---
    def loop(self, idle_wait=0.5):
        """Step until drained. Followers (other ranks) get an empty plan now and then while idle, so their
        collective calls never wait for long."""
        try:
            while True:
                with self.cond:
                    if not self.waiting and not self.running:
                        if self.draining:
                            break
                        self.cond.wait(idle_wait)
                        if not self.waiting and not self.running:
                            if self.mesh.world_size > 1:
                                share_plan(Plan(), self.mesh)
                            continue
                self.step()
        finally:
            share_plan(Plan(stop=True), self.mesh)

    def step(self):
        plan, admitted = self.plan()
        if plan.idle:
            return
        running = dict(self.running)
        try:
            decoded, prefilled = self.engine.run(share_plan(plan, self.mesh))
        except Exception as e:  # a bug or a device failure: tell every client of this batch, keep serving others
            logger.error("engine step failed: %s", e, exc_info=True)
            for req in list(running.values()) + [r for _, r in admitted]:
                req.sink.put({"error": f"internal error: {type(e).__name__}: {e}"})
                self.running.pop(req.row, None)
            return
        self.metrics.add("decode_steps_total", int(bool(plan.decode)))
        self.metrics.add("prefill_steps_total", len(plan.prefills))
        for row, req in admitted:
            self.running[row] = req
            self.metrics.add("prompt_tokens_total", len(req.prompt))
        for row, logits in list(decoded.items()) + list(prefilled.items()):
            req = self.running[row]
            self.emit(req, logits, req.sample(logits))
        with self.cond:
            self.metrics.set_load(len(self.waiting), len(self.running))

    def plan(self):
        """This step's Plan and the (row, request) pairs it admits."""
        eng, plan = self.engine, Plan()
        with self.cond:
            for row, req in list(self.running.items()):
                if req.cancelled:
                    self.finish(req, "abort")
            for req in [r for r in self.waiting if r.cancelled]:
                self.waiting.remove(req)
                self.metrics.add("request_aborted_total")
            active = self.running
            plan.decode = [(row, req.output[-1]) for row, req in active.items()]
            cursor = eng.cursor + (1 if active else 0)
            if not active:
                plan.shift, cursor = eng.cursor, 0       # an empty batch starts over at slot 0
            need = max((req.remaining() for req in active.values()), default=0)
            head = self.waiting[0] if self.waiting else None
            fits = lambda c, req: max(c, len(req.prompt)) + max(need, req.params.max_tokens - 1) <= eng.slots  # noqa
            if head is not None and active and len(active) < eng.rows and not fits(cursor, head):
                lo = min(req.first_slot for req in active.values())
                if lo > 0 and fits(cursor - lo, head):  # reclaim slots no running row reads any more
                    plan.shift, cursor = lo, cursor - lo
                    for req in active.values():
                        req.first_slot -= lo
            free = [r for r in range(eng.rows) if r not in active]
            admitted = []
            while self.waiting and free and fits(cursor, self.waiting[0]):
                req = self.waiting.popleft()
                cursor, need = max(cursor, len(req.prompt)), max(need, req.params.max_tokens - 1)
                admitted.append((free.pop(0), req))
            plan.cursor = cursor
            for row, req in admitted:
                req.row, req.first_slot = row, cursor - len(req.prompt)
                plan.prefills.append((row, req.prompt))
        return plan, admitted

    def emit(self, req, logits, token):
        now = time.perf_counter()
        if req.last_token_time is None:
            self.metrics.observe("ttft", now - req.arrival)
        else:
            self.metrics.observe("itl", now - req.last_token_time)
        req.last_token_time = now
        req.output.append(token)
        self.metrics.add("generation_tokens_total")
        logprob = None if req.params.logprobs is None else top_logprobs(logits, token, req.params.logprobs)
        is_eos = token in self.eos and not req.params.ignore_eos
        delta, stopped = req.text.add(token)
        reason = "stop" if (is_eos or stopped) else ("length" if len(req.output) >= req.params.max_tokens else None)
        if reason:
            delta += req.text.finish()
        req.sink.put({"index": req.index, "text": delta, "token": token, "logprob": logprob})
        if reason:
            self.finish(req, reason, stop_reason=req.text.stopped_by or (token if is_eos else None))

    def finish(self, req, reason, stop_reason=None):
        self.running.pop(req.row, None)
        if reason == "abort":
            self.metrics.add("request_aborted_total")
            return
        self.metrics.add("request_success_total")
        self.metrics.observe("e2e", time.perf_counter() - req.arrival)
        req.sink.put({"index": req.index, "done": True, "finish_reason": reason, "stop_reason": stop_reason,
                      "prompt_tokens": len(req.prompt), "completion_tokens": len(req.output)})


def new_sink():
    return queue.Queue()

"""The routes: OpenAI/vLLM (``/v1/completions``, ``/v1/chat/completions``, ``/v1/models``), ``/health``,
``/metrics`` and Yuan 2.0's ``PUT /yuan``. Each takes the request handler (mindkit.serve.server.Handler)."""
import time

from mindkit.serve import protocol
from mindkit.serve.protocol import ApiError
from mindkit.serve.responses import yuan_error, yuan_response


def completions(h):
    h.app.check_ready()
    prompts, params = protocol.parse_completion(h.body(), h.app.info)
    _answer(h, prompts, params, chat=False)


def chat_completions(h):
    h.app.check_ready()
    ids, params = protocol.parse_chat(h.body(), h.app.info)
    _answer(h, [ids], params, chat=True)


def _answer(h, prompts, params, chat):
    reqs, sink, collector = h.app.run(prompts, params, chat)
    if params.stream:
        h.stream(reqs, sink, collector, params.include_usage)
    else:
        h.send_json(200, h.collect(reqs, sink, collector).response())


def models(h):
    info = h.app.info
    h.send_json(200, {"object": "list", "data": [{
        "id": info.name, "object": "model", "created": int(time.time()), "owned_by": "mindkit", "root": info.name,
        "max_model_len": info.max_model_len}]})


def health(h):
    if h.app.ready:
        h.send_bytes(200, b"", "text/plain")
    else:
        state = "draining" if h.app.scheduler is not None else "loading"
        h.send_json(503, {"status": state}, {"Retry-After": str(h.app.config.retry_after)})


def metrics(h):
    h.send_bytes(200, h.app.metrics.render().encode(), "text/plain; version=0.0.4")


def yuan(h):
    """Answers in Yuan's envelope, errors too (``flag: false``), with the HTTP status of the error."""
    try:
        h.app.check_ready()
        ids, prompts, params = protocol.parse_yuan(h.body(), h.app.info)
        reqs, sink, collector = h.app.run(prompts, params, chat=False)
        texts = h.collect(reqs, sink, collector).text
    except ApiError as e:
        h.send_json(e.status, yuan_error(e.message), e.headers)
        return
    h.send_json(200, yuan_response(ids, texts))


ROUTES = {
    "/v1/completions": {"POST": completions},
    "/v1/chat/completions": {"POST": chat_completions},
    "/v1/models": {"GET": models},
    "/health": {"GET": health},
    "/metrics": {"GET": metrics},
    "/yuan": {"PUT": yuan, "POST": yuan},
}
PUBLIC = {"/health", "/metrics"}   # no API key needed (as vLLM)

"""OpenAI/vLLM request schemas: field names, defaults and validation, turned into token ids + SamplingParams.

Everything a client can get wrong becomes an ``ApiError`` naming the field, answered as HTTP 400 with OpenAI's
``{"error": {"message", "type", "param", "code"}}``; the server never dies of a bad request.
"""
import dataclasses
from typing import Optional

MAX_LOGPROBS = 20


class ApiError(Exception):
    def __init__(self, message, param=None, status=400, type="invalid_request_error", code=None, headers=None):
        super().__init__(message)
        self.message, self.param, self.status, self.type = message, param, status, type
        self.code, self.headers = code, headers or {}

    def body(self):
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclasses.dataclass
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0                  # 0 (or -1 in a request): off
    repetition_penalty: float = 1.0
    stop: tuple = ()
    seed: Optional[int] = None
    n: int = 1
    logprobs: Optional[int] = None  # None: none; k: the sampled token's logprob and the k most likely
    stream: bool = False
    include_usage: bool = False
    ignore_eos: bool = False        # vLLM's extension: generate max_tokens whatever comes

    @property
    def greedy(self):
        return self.temperature == 0 or self.top_k == 1


@dataclasses.dataclass
class ModelInfo:
    """What validation needs to know about the served model."""
    name: str
    tokenizer: object
    max_model_len: int
    vocab_size: int
    default_max_tokens: Optional[int] = None   # chat without max_tokens: this, or the rest of the context
    processor: object = None                   # how offline predict encodes a prompt (chat template or not)


def _number(body, name, default, low=None, high=None, low_open=False, integer=False):
    value = body.get(name, default)
    if value is None:
        return default
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        raise ApiError(f"{name}: got {value!r}; expected {kind}", name)
    too_low = low is not None and (value <= low if low_open else value < low)
    if too_low or (high is not None and value > high):
        span = f"{'(' if low_open else '['}{low}, {high}]" if high is not None else f"{'>' if low_open else '>='} {low}"
        raise ApiError(f"{name}: got {value!r}; expected {kind} {'in ' if high is not None else ''}{span}", name)
    return value


def _bool(body, name, default=False):
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ApiError(f"{name}: got {value!r}; expected true or false", name)
    return value


def _stop(body):
    stop = body.get("stop")
    if stop is None:
        return ()
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise ApiError(f"stop: got {body.get('stop')!r}; expected a non-empty string or a list of them", "stop")
    return tuple(stop)


def check_model(body, info):
    model = body.get("model")
    if model is not None and model != info.name:
        raise ApiError(f"The model `{model}` does not exist; this server serves `{info.name}`", "model",
                       code="model_not_found")


def sampling_params(body, info, prompt_len, max_tokens_default, logprobs):
    """The sampling fields shared by both OpenAI routes; ``prompt_len``: the longest prompt, for the length check."""
    max_tokens = _number(body, "max_tokens", max_tokens_default, low=1, integer=True)
    if max_tokens is None:
        max_tokens = max(info.max_model_len - prompt_len, 1)
    if prompt_len + max_tokens > info.max_model_len:
        raise ApiError(f"This model's maximum context length is {info.max_model_len} tokens. However, you requested "
                       f"{prompt_len + max_tokens} tokens ({prompt_len} in the prompt, {max_tokens} in the "
                       "completion). Please reduce the prompt or max_tokens.", "max_tokens")
    top_k = _number(body, "top_k", 0, low=-1, integer=True)
    stream = _bool(body, "stream")
    options = body.get("stream_options")
    if options is not None and (not isinstance(options, dict) or not stream):
        raise ApiError(f"stream_options: got {options!r}; expected an object, with stream true", "stream_options")
    return SamplingParams(
        max_tokens=max_tokens, temperature=_number(body, "temperature", 1.0, low=0),
        top_p=_number(body, "top_p", 1.0, low=0, high=1, low_open=True), top_k=max(top_k, 0),
        repetition_penalty=_number(body, "repetition_penalty", 1.0, low=0, low_open=True), stop=_stop(body),
        seed=_number(body, "seed", None, integer=True), n=_number(body, "n", 1, low=1, high=16, integer=True),
        logprobs=logprobs, stream=stream, include_usage=_bool(options or {}, "include_usage"),
        ignore_eos=_bool(body, "ignore_eos"))


def _token_ids(prompt, info, name):
    if not prompt:
        raise ApiError(f"{name}: the prompt is empty; expected at least one token", name)
    if not all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < info.vocab_size for t in prompt):
        raise ApiError(f"{name}: expected token ids, integers in [0, {info.vocab_size})", name)
    return list(prompt)


def completion_prompts(body, info):
    """``prompt``: a string, a list of strings, a list of token ids, or a list of token-id lists."""
    prompt = body.get("prompt")
    if prompt is None:
        raise ApiError("prompt: missing; expected a string, a list of strings or token ids", "prompt")
    if isinstance(prompt, str) or (isinstance(prompt, list) and prompt and isinstance(prompt[0], int)):
        prompt = [prompt]
    if not isinstance(prompt, list) or not prompt:
        raise ApiError(f"prompt: got {body.get('prompt')!r}; expected a non-empty string, list of strings or "
                       "token ids", "prompt")
    out = []
    for i, p in enumerate(prompt):
        name = "prompt" if len(prompt) == 1 else f"prompt[{i}]"
        if isinstance(p, str):
            if not p:
                raise ApiError(f"{name}: the prompt is empty; expected at least one character", "prompt")
            out.append(info.tokenizer.encode(p))
        elif isinstance(p, list):
            out.append(_token_ids(p, info, name))
        else:
            raise ApiError(f"{name}: got {p!r}; expected a string or a list of token ids", "prompt")
    return out


def parse_completion(body, info):
    check_model(body, info)
    prompts = completion_prompts(body, info)
    logprobs = _number(body, "logprobs", None, low=0, high=MAX_LOGPROBS, integer=True)
    return prompts, sampling_params(body, info, max(map(len, prompts)), 16, logprobs)


def chat_prompt(body, info):
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(f"messages: got {messages!r}; expected a non-empty list of {{role, content}}", "messages")
    clean = []
    for i, m in enumerate(messages):
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(content, str):
            raise ApiError(f"messages[{i}]: expected {{\"role\": str, \"content\": str}}", f"messages[{i}]")
        clean.append({"role": m["role"], "content": content})
    if not info.tokenizer.chat_template:
        raise ApiError("this model's tokenizer has no chat template; use /v1/completions", "messages")
    from mindkit.errors import MindkitError
    try:
        return info.tokenizer.apply_chat_template(clean, add_generation_prompt=True)
    except MindkitError as e:
        raise ApiError(f"messages: {e}", "messages") from None


def parse_chat(body, info):
    check_model(body, info)
    ids = chat_prompt(body, info)
    logprobs = None
    if _bool(body, "logprobs"):
        logprobs = _number(body, "top_logprobs", 0, low=0, high=MAX_LOGPROBS, integer=True)
    if body.get("max_tokens") is None and body.get("max_completion_tokens") is not None:
        body = {**body, "max_tokens": body["max_completion_tokens"]}
    default = info.default_max_tokens if info.default_max_tokens else None
    if default is not None:
        default = min(default, max(info.max_model_len - len(ids), 1))
    return ids, sampling_params(body, info, len(ids), default, logprobs)


def parse_yuan(body, info):
    """Yuan 2.0's ``PUT /yuan``: ``ques_list`` [{id, ques}], ``tokens_to_generate``, temperature, top_p (0: off),
    top_k (1: greedy)."""
    ques = body.get("ques_list")
    if not isinstance(ques, list) or not ques or not all(isinstance(q, dict) and isinstance(q.get("ques"), str)
                                                         and q["ques"] for q in ques):
        raise ApiError("ques_list: expected a non-empty list of {\"id\", \"ques\"} with non-empty ques",
                       "ques_list")
    prompts = (info.processor.encode([q["ques"] for q in ques]) if info.processor is not None
               else [info.tokenizer.encode(q["ques"]) for q in ques])
    top_p = _number(body, "top_p", 0.0, low=0, high=1)
    fields = {"max_tokens": _number(body, "tokens_to_generate", 64, low=1, integer=True),
              "temperature": body.get("temperature", 1.0), "top_k": body.get("top_k", 1),
              "top_p": top_p if top_p > 0 else 1.0}
    return [q.get("id") for q in ques], prompts, sampling_params(fields, info, max(map(len, prompts)), 64, None)

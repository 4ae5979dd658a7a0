"""The inference server for real, on a loopback port: the tiny random Llama (and SmolLM2, slow). Greedy answers equal
offline predict, streams concatenate to the whole text, concurrent requests share decode steps, every error has
its code and the server keeps serving, the openai client works, SIGTERM drains, msrun model_parallel=2 and
pipeline_stage=2 answer the same."""
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import REPO, TINY_CONFIG
from mindkit.serve import client

TINY_SERVE = os.path.join(REPO, "configs", "tiny", "serve_tiny_llama.yaml")
SMOLLM2_SERVE = os.path.join(REPO, "configs", "smollm2", "serve_smollm2_135m.yaml")
RUN = os.path.join(REPO, "run_mindformer.py")
PROMPTS = ["the cat sat on the mat", "a dog ran far away", "big red car"]


def free_port():
    from test_launcher import free_port as port
    return port()


class Server:
    """run_mindformer.py --run_mode serve in a subprocess; ``base`` is its URL."""

    def __init__(self, args, cwd, port=None, timeout=300):
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = open(os.path.join(cwd, f"server_{self.port}.log"), "w+")
        self.proc = subprocess.Popen([sys.executable, RUN, *args, f"--serve.port={self.port}"], cwd=cwd,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        try:
            client.wait_ready(self.base, timeout, self.proc)
        except Exception:
            self.stop()
            raise AssertionError(self.output()[-3000:]) from None

    def output(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self, sig=signal.SIGTERM, timeout=120):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def tiny_args(tiny_ckpt, tiny_sp_model, tmp, *extra):
    return ["--config", TINY_SERVE, "--load_checkpoint", tiny_ckpt, f"--processor.tokenizer.vocab_file={tiny_sp_model}",
            "--output_dir", str(tmp / "output"), *extra]


@pytest.fixture(scope="module")
def server(tiny_ckpt, tiny_sp_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    s = Server(tiny_args(tiny_ckpt, tiny_sp_model, tmp), tmp)
    yield s
    assert s.stop() == 0, s.output()[-3000:]


def offline_answers(args, prompts, cwd, max_new_tokens):
    """The answers offline predict prints (``answer: ...``) for ``prompts``, greedy."""
    proc = subprocess.run([sys.executable, RUN, *args, "--run_mode", "predict", "--max_new_tokens",
                           str(max_new_tokens), "--predict_batch_size", "1", "--predict_data", *prompts],
                          cwd=cwd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return re.findall(r"^answer: (.*?)\n\n", proc.stdout, flags=re.M | re.S)


def complete(base, prompt, **kw):
    body = {"prompt": prompt, "max_tokens": 8, "temperature": 0, **kw}
    return client.post(base, "/v1/completions", body)


def test_health_models_and_routes(server):
    assert client.request(server.base, "GET", "/health")[0] == 200
    status, data, _ = client.request(server.base, "GET", "/v1/models")
    assert status == 200 and data["data"][0]["id"] == "tiny_llama" and data["data"][0]["max_model_len"] == 128


def test_greedy_completion_equals_offline_predict(server, tiny_ckpt, tiny_sp_model, tmp_path):
    args = ["--config", TINY_CONFIG, "--load_checkpoint", tiny_ckpt,
            f"--processor.tokenizer.vocab_file={tiny_sp_model}", "--output_dir", str(tmp_path / "output")]
    expected = offline_answers(args, PROMPTS, tmp_path, 8)
    assert len(expected) == len(PROMPTS)
    answers = [complete(server.base, p)["choices"][0]["text"] for p in PROMPTS]
    assert answers == expected
    batched = complete(server.base, PROMPTS)  # a list of prompts: one choice each, same answers
    assert [c["text"] for c in sorted(batched["choices"], key=lambda c: c["index"])] == expected


def test_stream_concatenates_to_non_stream(server):
    for body, path, chat in (({"prompt": PROMPTS[0]}, "/v1/completions", False),
                             ({"messages": [{"role": "user", "content": PROMPTS[1]}]}, "/v1/chat/completions",
                              True)):
        body = {**body, "max_tokens": 12, "temperature": 0}
        whole = client.post(server.base, path, body)
        events, _, done = client.stream(server.base, path, {**body, "stream_options": {"include_usage": True}})
        assert done
        text = whole["choices"][0]["message"]["content"] if chat else whole["choices"][0]["text"]
        assert client.stream_text(events, chat)[0] == text
        assert events[-1]["choices"] == [] and events[-1]["usage"] == whole["usage"]
        assert sum(1 for e in events for c in e["choices"] if c["finish_reason"]) == 1


def test_sixteen_concurrent_requests_share_decode_steps(server):
    prompts = [f"{PROMPTS[i % 3]} {i}" for i in range(16)]
    alone = {}
    before = client.metrics(server.base)["mindkit:decode_steps_total"]
    for p in prompts:
        alone[p] = complete(server.base, p, max_tokens=10, ignore_eos=True)["choices"][0]["text"]
    sequential_steps = client.metrics(server.base)["mindkit:decode_steps_total"] - before
    results, errors = {}, []

    def one(p):
        try:
            results[p] = complete(server.base, p, max_tokens=10, ignore_eos=True)["choices"][0]["text"]
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
    before = client.metrics(server.base)["mindkit:decode_steps_total"]
    threads = [threading.Thread(target=one, args=(p,)) for p in prompts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    concurrent_steps = client.metrics(server.base)["mindkit:decode_steps_total"] - before
    assert not errors and results == alone
    assert concurrent_steps < sequential_steps / 2, (concurrent_steps, sequential_steps)


ERRORS = [
    ("POST", "/v1/completions", b"{not json", 400, None),
    ("POST", "/v1/completions", {"prompt": "hi", "model": "gpt-17"}, 400, "model"),
    ("POST", "/v1/completions", {"prompt": "hi", "max_tokens": 500}, 400, "max_tokens"),
    ("POST", "/v1/completions", {"prompt": "hi", "temperature": -0.5}, 400, "temperature"),
    ("POST", "/v1/completions", {"prompt": "hi", "top_p": 0}, 400, "top_p"),
    ("POST", "/v1/completions", {"prompt": "hi", "top_p": 1.5}, 400, "top_p"),
    ("POST", "/v1/completions", {"prompt": ""}, 400, "prompt"),
    ("POST", "/v1/completions", {"prompt": []}, 400, "prompt"),
    ("POST", "/v1/completions", {"max_tokens": 3}, 400, "prompt"),
    ("POST", "/v1/completions", {"prompt": "hi", "n": "two"}, 400, "n"),
    ("POST", "/v1/chat/completions", {"messages": []}, 400, "messages"),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user"}]}, 400, "messages[0]"),
    ("POST", "/v1/nothing", {}, 404, None),
    ("GET", "/v1/completions", None, 405, None),
    ("DELETE", "/health", None, 405, None),
]


@pytest.mark.parametrize("method,path,body,status,param", ERRORS, ids=[f"{e[3]}-{i}" for i, e in enumerate(ERRORS)])
def test_errors_have_their_code_and_the_server_keeps_serving(server, method, path, body, status, param):
    raw = body if isinstance(body, bytes) else None
    got, data, _ = client.request(server.base, method, path, None if raw else body, raw=raw)
    assert got == status, data
    assert set(data["error"]) == {"message", "type", "param", "code"} and data["error"]["param"] == param
    if param == "max_tokens":
        assert "128" in data["error"]["message"] and "500" in data["error"]["message"]
    assert complete(server.base, "the cat", max_tokens=2)["choices"][0]["finish_reason"] == "length"


def test_stop_strings_seed_logprobs_and_n(server):
    free = complete(server.base, PROMPTS[0], max_tokens=12)["choices"][0]["text"]
    stop = free.strip().split(" ")[1] if " " in free.strip() else free[2:4]
    cut = complete(server.base, PROMPTS[0], max_tokens=12, stop=[stop])["choices"][0]
    assert cut["finish_reason"] == "stop" and cut["stop_reason"] == stop and cut["text"] == free[:free.find(stop)]
    sampled = dict(max_tokens=10, temperature=0.9, top_p=0.9, seed=7)
    assert complete(server.base, PROMPTS[1], **sampled) ["choices"][0]["text"] == \
        complete(server.base, PROMPTS[1], **sampled)["choices"][0]["text"]
    lp = complete(server.base, PROMPTS[1], logprobs=3, n=2)
    assert len(lp["choices"]) == 2 and lp["choices"][0]["text"] == lp["choices"][1]["text"]
    logprobs = lp["choices"][0]["logprobs"]
    assert len(logprobs["tokens"]) == 8 and all(len(t) == 3 for t in logprobs["top_logprobs"])
    assert all(v <= 0 for v in logprobs["token_logprobs"])


def test_cancelled_stream_frees_its_row(server):
    before = client.metrics(server.base)
    events, _, done = client.stream(server.base, "/v1/completions",
                                    {"prompt": PROMPTS[2], "max_tokens": 100, "ignore_eos": True}, stop_after=2)
    assert not done and len(events) == 2
    deadline = time.time() + 30
    while client.metrics(server.base)["mindkit:request_aborted_total"] == before["mindkit:request_aborted_total"]:
        assert time.time() < deadline, "the cancelled request was never aborted"
        time.sleep(0.1)
    after = client.metrics(server.base)
    assert after["mindkit:num_requests_running"] == 0
    assert after["mindkit:decode_steps_total"] - before["mindkit:decode_steps_total"] < 90


def test_yuan_route(server):
    status, data, _ = client.request(server.base, "PUT", "/yuan", {
        "ques_list": [{"id": "000", "ques": PROMPTS[0]}, {"id": "001", "ques": PROMPTS[1]}],
        "tokens_to_generate": 8, "temperature": 1.0, "top_p": 0.0, "top_k": 1})
    assert status == 200 and data["flag"] is True and data["errCode"] == "0"
    expected = [complete(server.base, p)["choices"][0]["text"] for p in PROMPTS[:2]]
    assert [o["ans"] for o in data["resData"]["output"]] == expected
    assert [o["id"] for o in data["resData"]["output"]] == ["000", "001"]
    status, data, _ = client.request(server.base, "PUT", "/yuan", {"ques_list": []})
    assert status == 400 and data["flag"] is False


def test_openai_client(server):
    openai = pytest.importorskip("openai")
    oc = openai.OpenAI(base_url=server.base + "/v1", api_key="unused")
    assert [m.id for m in oc.models.list().data] == ["tiny_llama"]
    text = oc.completions.create(model="tiny_llama", prompt=PROMPTS[0], max_tokens=8, temperature=0).choices[0].text
    assert text == complete(server.base, PROMPTS[0])["choices"][0]["text"]
    chat = oc.chat.completions.create(model="tiny_llama", messages=[{"role": "user", "content": "hi"}],
                                      max_tokens=8, temperature=0)
    assert chat.choices[0].message.role == "assistant" and chat.usage.completion_tokens >= 1
    pieces = [c.choices[0].delta.content or "" for c in oc.chat.completions.create(
        model="tiny_llama", messages=[{"role": "user", "content": "hi"}], max_tokens=8, temperature=0, stream=True)
        if c.choices]
    assert "".join(pieces) == chat.choices[0].message.content
    with pytest.raises(openai.BadRequestError):
        oc.completions.create(model="tiny_llama", prompt="hi", temperature=-1)


def test_api_key_queue_limit_and_sigterm_drain(tiny_ckpt, tiny_sp_model, tmp_path):
    s = Server(tiny_args(tiny_ckpt, tiny_sp_model, tmp_path, "--serve.api_key=sekrit", "--serve.max_queue=1",
                         "--serve.max_num_seqs=1"), tmp_path)
    try:
        body = {"prompt": PROMPTS[0], "max_tokens": 100, "ignore_eos": True, "temperature": 0}
        assert client.request(s.base, "POST", "/v1/completions", body)[0] == 401
        assert client.request(s.base, "POST", "/v1/completions", body, api_key="wrong")[0] == 401
        assert client.request(s.base, "GET", "/health")[0] == 200  # public, as vLLM
        results = []
        run = lambda: results.append(client.request(s.base, "POST", "/v1/completions", body, api_key="sekrit"))  # noqa
        threads = [threading.Thread(target=run) for _ in range(4)]
        for t in threads:  # all four arrive within ~0.1 s, while the first still generates its 100 tokens
            t.start()
            time.sleep(0.02)
        time.sleep(0.1)
        s.proc.send_signal(signal.SIGTERM)  # drains: the running and the queued one finish, new ones get 503
        time.sleep(0.3)
        late = client.request(s.base, "POST", "/v1/completions", body, api_key="sekrit")
        for t in threads:
            t.join()
        assert s.proc.wait(120) == 0
    finally:
        s.stop()
    statuses = sorted(r[0] for r in results)
    assert statuses.count(200) == 2 and statuses.count(503) == 2, statuses
    assert all(r[2].get("Retry-After") for r in results if r[0] == 503)
    assert late[0] == 503
    assert "drained and stopped" in s.output()


@pytest.mark.parametrize("split", ["model_parallel", "pipeline_stage"])
def test_msrun_two_ranks_answer_as_one_process(split, server, tiny_ckpt, tiny_sp_model, tmp_path):
    """Rank 0 serves HTTP and broadcasts each step; both ranks hold half of every layer (model_parallel) or half of
    the layers (pipeline_stage). SIGTERM to rank 0 drains and stops both."""
    from test_launcher import LAUNCHER
    port = free_port()
    cmd = " ".join([RUN, *tiny_args(tiny_ckpt, tiny_sp_model, tmp_path), "--use_parallel", "True",
                    f"--parallel_config.{split}", "2", f"--serve.port={port}"])
    log_dir = tmp_path / "msrun_log"
    launcher = subprocess.Popen(["bash", LAUNCHER, cmd, "2", str(free_port()), str(log_dir), "True", "300"],
                                cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    logs = lambda: "".join(p.read_text(errors="replace") for p in sorted(log_dir.glob("worker_*.log")))  # noqa
    try:
        client.wait_ready(base, 300, launcher)
        bodies = [{"prompt": p, "max_tokens": 10, "temperature": 0, "ignore_eos": True} for p in PROMPTS]
        results = {}
        threads = [threading.Thread(target=lambda i=i: results.__setitem__(
            i, client.post(base, "/v1/completions", bodies[i])["choices"][0]["text"])) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        expected = [client.post(server.base, "/v1/completions", b)["choices"][0]["text"] for b in bodies]
        assert [results.get(i) for i in range(3)] == expected, logs()[-3000:]
        events, _, done = client.stream(base, "/v1/completions", bodies[0])
        assert done and client.stream_text(events)[0] == expected[0]
        pid = int(re.search(r"listening on \S+, pid (\d+)", (log_dir / "worker_0.log").read_text()).group(1))
        os.kill(pid, signal.SIGTERM)
        assert launcher.wait(120) == 0, logs()[-3000:]
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert "rank 1 stopped" in logs() and "drained and stopped" in logs()


@pytest.fixture(scope="module")
def smollm2_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve_smollm2")
    s = Server(["--config", SMOLLM2_SERVE, "--output_dir", str(tmp / "output"), "--serve.max_num_seqs=4"], tmp)
    yield s
    assert s.stop() == 0, s.output()[-3000:]


QUESTIONS = ["What is the capital of France?", "Name a color.", "What is 2 + 2?"]


@pytest.mark.slow
def test_smollm2_chat_equals_offline_predict(smollm2_server, tmp_path):
    """Chat (the model's template) and Yuan's route both answer as ``--run_mode predict`` does, greedy."""
    expected = offline_answers(["--config", SMOLLM2_SERVE, "--output_dir", str(tmp_path / "output")],
                               QUESTIONS[:2], tmp_path, 10)
    chat = [client.post(smollm2_server.base, "/v1/chat/completions", {
        "messages": [{"role": "user", "content": q}], "max_tokens": 10, "temperature": 0})
        ["choices"][0]["message"]["content"] for q in QUESTIONS[:2]]
    assert chat == expected and "Paris" in chat[0]
    status, data, _ = client.request(smollm2_server.base, "PUT", "/yuan", {
        "ques_list": [{"id": str(i), "ques": q} for i, q in enumerate(QUESTIONS[:2])], "tokens_to_generate": 10,
        "top_k": 1})
    assert status == 200 and [o["ans"] for o in data["resData"]["output"]] == expected


@pytest.mark.slow
def test_smollm2_concurrent_streams_and_openai_client(smollm2_server):
    openai = pytest.importorskip("openai")
    oc = openai.OpenAI(base_url=smollm2_server.base + "/v1", api_key="unused")
    alone = {q: oc.chat.completions.create(model="smollm2_135m", messages=[{"role": "user", "content": q}],
                                           max_tokens=8, temperature=0).choices[0].message.content
             for q in QUESTIONS}
    streamed = {}

    def one(q):
        chunks = oc.chat.completions.create(model="smollm2_135m", messages=[{"role": "user", "content": q}],
                                            max_tokens=8, temperature=0, stream=True)
        streamed[q] = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    threads = [threading.Thread(target=one, args=(q,)) for q in QUESTIONS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert streamed == alone
    text = oc.completions.create(model="smollm2_135m", prompt="The capital of France is", max_tokens=4,
                                 temperature=0).choices[0].text
    assert "Paris" in text

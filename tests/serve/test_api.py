"""`prima serve` through the official `openai` Python client (plus raw HTTP for what a client
library cannot send). Usage: test_api.py PRIMA_BINARY MODEL.gguf

Starts one server (4 slots, API key required), runs every test against it, prints one line per
test, exits non-zero if any failed.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request

import openai

KEY = "test-key-4e1b"
GREEDY = dict(temperature=0, seed=1)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


RING = os.environ.get("PRIMA_SERVE_RING") == "1"


class Server:
    def __init__(self, binary, model, key=True):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        keyfile = tempfile.NamedTemporaryFile("w", suffix=".key", delete=False)
        keyfile.write(KEY + "\n")
        keyfile.close()
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
        if RING:
            # `prima up --serve`: the same API from the head of a loopback ring of three devices
            # (two local agents on free ports, even split), [serve] from the cluster file.
            d = tempfile.mkdtemp(prefix="prima-serve-ring-")
            with open(os.path.join(d, "cluster.secret"), "w") as f:
                f.write("serve-ring-test-secret-0123456789\n")
            ports = [free_port(), free_port()]
            self.agents = [subprocess.Popen(
                [binary, "agent", "--listen", f"127.0.0.1:{p}", "--secret-file", os.path.join(d, "cluster.secret"),
                 "--cache-dir", os.path.join(d, f"a{p}")], stdout=self.log, stderr=subprocess.STDOUT) for p in ports]
            toml = (f'model = "{os.path.abspath(model)}"\nsecret_file = "cluster.secret"\nschedule = "even"\n'
                    f'ctx_size = 1024\n'
                    + '[[device]]\nname = "head"\naddr = "127.0.0.1:1"\n'
                    + "".join(f'[[device]]\nname = "d{p}"\naddr = "127.0.0.1:{p}"\n' for p in ports)
                    + '[serve]\nparallel = 4\n' + (f'api_key_file = "{keyfile.name}"\n' if key else ""))
            with open(os.path.join(d, "cluster.toml"), "w") as f:
                f.write(toml)
            time.sleep(1)
            cmd = [binary, "up", os.path.join(d, "cluster.toml"), "--serve", f"127.0.0.1:{self.port}"]
        else:
            cmd = [binary, "serve", "-m", model, "--listen", f"127.0.0.1:{self.port}", "-c", "1024", "--parallel", "4",
                   "--queue", "4"] + (["--api-key-file", keyfile.name] if key else [])
        self.agents = getattr(self, "agents", [])
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited: " + open(self.log.name).read())
            try:
                if raw(self, "GET", "/health")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server not ready in 120 s")

    def client(self, key=KEY):
        return openai.OpenAI(base_url=self.base + "/v1", api_key=key, max_retries=0, timeout=120)

    def stop(self):
        for p in [self.proc] + self.agents:
            p.terminate()
        for p in [self.proc] + self.agents:
            p.wait(10)


def raw(srv, method, path, body=None, headers=None):
    """(status, parsed JSON or text) without any client library."""
    h = {"Authorization": "Bearer " + KEY, **(headers or {})}
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    req = urllib.request.Request(srv.base + path, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def stats(srv):
    return raw(srv, "GET", "/v1/cluster")[1]["stats"]


def chat(c, text, **kw):
    return c.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": text}], **kw)


def expect_error(status, fn):
    try:
        fn()
    except openai.APIStatusError as e:
        assert e.status_code == status, f"status {e.status_code}, wanted {status}: {e}"
        body = e.response.json()
        assert set(body["error"]) >= {"message", "type", "code"}, body
        return body["error"]
    raise AssertionError(f"no error; wanted {status}")


# ---------------------------------------------------------------- tests


def test_models_and_health(srv):
    assert raw(srv, "GET", "/health", headers={"Authorization": ""}) == (200, {"status": "ok"})
    models = srv.client(key="no-key-needed").models.list()
    assert [m.id for m in models.data] == [MODEL_ID], models


def test_chat_whole_and_streamed_agree(srv):
    c = srv.client()
    whole = chat(c, "Name three colours.", max_tokens=24, **GREEDY)
    text = whole.choices[0].message.content
    assert text and whole.choices[0].message.role == "assistant"
    assert whole.choices[0].finish_reason in ("stop", "length")
    u = whole.usage
    assert u.prompt_tokens > 5 and 0 < u.completion_tokens <= 24 and u.total_tokens == u.prompt_tokens + u.completion_tokens
    chunks = list(chat(c, "Name three colours.", max_tokens=24, stream=True, stream_options={"include_usage": True}, **GREEDY))
    assert chunks[0].choices[0].delta.role == "assistant", chunks[0]
    content = [ch for ch in chunks if ch.choices]
    assert all(ch.choices[0].finish_reason is None for ch in content[:-1])
    assert content[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    assert "".join(ch.choices[0].delta.content or "" for ch in content) == text
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == u.completion_tokens, chunks[-1]


def test_completions_whole_and_streamed(srv):
    c = srv.client()
    whole = c.completions.create(model=MODEL_ID, prompt="The alphabet: A, B, C,", max_tokens=12, **GREEDY)
    assert whole.choices[0].finish_reason == "length" and whole.usage.completion_tokens == 12
    parts = list(c.completions.create(model=MODEL_ID, prompt="The alphabet: A, B, C,", max_tokens=12, stream=True, **GREEDY))
    assert "".join(p.choices[0].text for p in parts) == whole.choices[0].text
    assert parts[-1].choices[0].finish_reason == "length"


def test_stop_strings_are_not_sent(srv):
    c = srv.client()
    prompt = "Count: 1, 2, 3, 4,"
    full = c.completions.create(model=MODEL_ID, prompt=prompt, max_tokens=24, **GREEDY).choices[0].text
    # A stop string from the middle of the greedy text, spanning token boundaries.
    stop = full[len(full) // 2: len(full) // 2 + 3]
    want = full[: full.index(stop)]
    got = c.completions.create(model=MODEL_ID, prompt=prompt, max_tokens=24, stop=[stop, "never-there"], **GREEDY)
    assert got.choices[0].text == want and got.choices[0].finish_reason == "stop", (full, stop, got)
    streamed = list(c.completions.create(model=MODEL_ID, prompt=prompt, max_tokens=24, stop=stop, stream=True, **GREEDY))
    assert "".join(p.choices[0].text for p in streamed) == want
    assert streamed[-1].choices[0].finish_reason == "stop"


def test_wrong_or_missing_key(srv):
    err = expect_error(401, lambda: chat(srv.client(key="wrong"), "hi", max_tokens=1))
    assert err["type"] == "authentication_error"
    assert raw(srv, "POST", "/v1/completions", {"prompt": "a", "max_tokens": 1}, {"Authorization": ""})[0] == 401
    ok = raw(srv, "POST", "/v1/completions", {"prompt": "a", "max_tokens": 1}, {"Authorization": "", "x-api-key": KEY})
    assert ok[0] == 200, ok


def test_bad_requests(srv):
    status, body = raw(srv, "POST", "/v1/chat/completions", b'{"messages": [oops')
    assert status == 400 and "JSON" in body["error"]["message"], body
    err = expect_error(400, lambda: chat(srv.client(), "hi", n=2))
    assert "n = 2" in err["message"]
    expect_error(400, lambda: chat(srv.client(), "hi", temperature=7))
    err = expect_error(404, lambda: srv.client().chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}]))
    assert err["code"] == "model_not_found"
    assert raw(srv, "GET", "/v1/nothing")[0] == 404


def test_too_long_prompt_and_huge_body(srv):
    err = expect_error(413, lambda: srv.client().completions.create(model=MODEL_ID, prompt="word " * 3000, max_tokens=1))
    assert err["code"] == "context_length_exceeded", err
    # A body larger than the server takes: refused from its declared length, connection answered.
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode() +
                  b"\r\nContent-Length: 100000000\r\n\r\n{\"prompt\":")
        head = s.recv(4096).decode()
    assert head.startswith("HTTP/1.1 413"), head


def test_concurrent_equals_sequential(srv):
    c = srv.client()
    prompts = ["Tell me about the sea.", "What is 2+2?", "Write a haiku about snow.", "Name a fruit."]
    alone = [chat(c, p, max_tokens=20, **GREEDY).choices[0].message.content for p in prompts]
    together = [None] * 4

    def one(i):
        together[i] = chat(c, prompts[i], max_tokens=20, **GREEDY).choices[0].message.content

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert together == alone, (alone, together)


def test_dropped_stream_is_cancelled(srv):
    before = stats(srv)
    c = srv.client()
    stream = chat(c, "Write a very long story about a dragon.", max_tokens=900, stream=True, temperature=0, seed=1)
    got = 0
    for ch in stream:
        if ch.choices and ch.choices[0].delta.content:
            got += 1
            if got == 3:
                break
    stream.close()
    deadline = time.time() + 10
    while time.time() < deadline:
        s = stats(srv)
        if s["cancelled"] > before["cancelled"] and s["active"] == 0:
            # It stopped near where the client left, not after 900 tokens.
            assert s["completion_tokens"] - before["completion_tokens"] < 100, s
            return
        time.sleep(0.05)
    raise AssertionError(f"generation not cancelled: {stats(srv)}")


def test_long_prompt_gets_comments_then_data(srv):
    # Raw SSE: a prompt of several chunks sends `: prompt n/m` comments before any data.
    body = {"prompt": "apple banana cherry " * 150, "max_tokens": 2, "stream": True, **GREEDY}
    req = urllib.request.Request(srv.base + "/v1/completions", data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": "Bearer " + KEY, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.headers["Content-Type"] == "text/event-stream"
        events = r.read().decode().split("\n\n")
    first_data = next(i for i, e in enumerate(events) if e.startswith("data: "))
    assert all(e.startswith(": ") for e in events[:first_data]), events[:first_data + 1]
    assert any(e.startswith(": prompt ") for e in events[:first_data]), events[:first_data + 1]
    assert events[-2] == "data: [DONE]" and events[-1] == "", events[-3:]
    datas = [e for e in events if e.startswith("data: {")]
    assert json.loads(datas[-1][6:])["choices"][0]["finish_reason"] == "length"


def test_slow_and_garbage_clients_do_not_block_others(srv):
    slow = socket.create_connection(("127.0.0.1", srv.port))
    slow.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{\"pro")  # then silence
    junk = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    junk.sendall(b"\x00\x01 not http at all\r\n\r\n")
    answer = junk.recv(100)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 400"), answer
    t0 = time.time()
    r = srv.client().completions.create(model=MODEL_ID, prompt="Hello", max_tokens=3, **GREEDY)
    assert r.usage.completion_tokens == 3 and time.time() - t0 < 30
    slow.close()
    junk.close()


def test_web_page_is_embedded(srv):
    status, html = raw(srv, "GET", "/")
    assert status == 200 and "<title>prima</title>" in html and "http://" not in html.replace("http://www.w3.org", "")
    assert "innerHTML" not in html


def main():
    global MODEL_ID
    binary, model = sys.argv[1], sys.argv[2]
    MODEL_ID = os.path.splitext(os.path.basename(model))[0]
    srv = Server(binary, model)
    failed = 0
    try:
        only = sys.argv[3:]
        for name, fn in list(globals().items()):
            if not name.startswith("test_") or (only and not any(o in name for o in only)):
                continue
            t0 = time.time()
            try:
                fn(srv)
                print(f"ok   {name} ({time.time() - t0:.1f} s)", flush=True)
            except Exception:
                failed += 1
                print(f"FAIL {name}\n{traceback.format_exc()}", flush=True)
    finally:
        srv.stop()
        if failed:
            print(open(srv.log.name).read()[-4000:])
    print(f"{failed} failed" if failed else "all serve API tests passed")
    sys.exit(1 if failed else 0)


MODEL_ID = ""
if __name__ == "__main__":
    main()

"""The OpenAI-compatible API through the real `openai` client (as users point their tools at it).

usage: test_openai.py BUILD_BIN_DIR CONFIGS_DIR
Starts moe-launch (2 CPU ranks, tiny_a) with --openai-port, and a bare moe-coordinator with no
worker for the 503 case; every check prints 'ok - ...' or 'FAIL - ...', and the last line is
'N passed, M failed'.
"""
import json
import re
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import openai

BIN, CONFIGS = sys.argv[1], sys.argv[2]
passed = failed = 0


def check(name, cond, detail=""):
    global passed, failed
    if cond:
        passed += 1
        print(f"ok   - {name}")
    else:
        failed += 1
        print(f"FAIL - {name} {detail}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, secs=60):
    end = time.time() + secs
    while time.time() < end:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except OSError:
            time.sleep(0.3)
    return None


def headers_only(port, path, length, extra=""):
    """POSTs headers announcing a `length`-byte body and sends none of it: the status line the
    server answers with, and after how many seconds (None if it answers nothing in 15 s)."""
    t = time.time()
    with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
        s.sendall((f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {length}\r\n{extra}\r\n").encode())
        try:
            line = s.makefile("rb").readline().decode(errors="replace").split()
        except OSError:
            return None, time.time() - t
    return (int(line[1]) if len(line) > 1 else None), time.time() - t


tmp = tempfile.mkdtemp()
grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
launch = subprocess.Popen(
    [f"{BIN}/moe-launch", "--np", "2", "--config", f"{CONFIGS}/tiny_a.yaml", "--listen",
     f"127.0.0.1:{grpc_port}", "--metrics-port", str(metrics_port), "--openai-port", str(http_port),
     "--max-queue", "3", "--served-model-name", "tiny-a"],
    stdout=open(f"{tmp}/launch.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
bare = None
try:
    base = f"http://127.0.0.1:{http_port}"
    end = time.time() + 90
    while time.time() < end and wait_http(base + "/health", 2) != 200:
        time.sleep(0.5)
    check("/health is 200 once the worker attached", wait_http(base + "/health") == 200,
          open(f"{tmp}/launch.log").read()[-2000:])
    client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=60)

    models = client.models.list()
    check("/v1/models lists the served name", [m.id for m in models.data] == ["tiny-a"])

    # Greedy text equals what moe-run decodes for the same prompt.
    prompt = "The licenses for most software"
    with open(f"{tmp}/in.jsonl", "w") as f:
        f.write(json.dumps({"id": 0, "prompt": prompt, "max_new_tokens": 12}) + "\n")
    subprocess.run([f"{BIN}/moe-run", "--config", f"{CONFIGS}/tiny_a.yaml", "--input",
                    f"{tmp}/in.jsonl", "--output", f"{tmp}/out.jsonl", "--no-stats-table",
                    "--log-level", "warn"], check=True)
    want = json.loads(open(f"{tmp}/out.jsonl").readline())
    r = client.completions.create(model="tiny-a", prompt=prompt, max_tokens=12, temperature=0)
    check("greedy completion equals moe-run's text", r.choices[0].text == want["output_text"],
          f"{r.choices[0].text!r} vs {want['output_text']!r}")
    check("finish_reason length -> 'length'",
          r.choices[0].finish_reason == ("length" if want["finish_reason"] == "length" else "stop"))
    check("usage counts the tokens", r.usage.completion_tokens == len(want["output_ids"])
          and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
          and r.usage.prompt_tokens > 0, str(r.usage))

    # Streaming gives the same text in pieces, the finish reason on the last chunk.
    chunks = list(client.completions.create(model="tiny-a", prompt=prompt, max_tokens=12,
                                            temperature=0, stream=True))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    check("streamed text equals the whole", text == r.choices[0].text, f"{text!r}")
    check("finish_reason on the last chunk", chunks[-1].choices[0].finish_reason == "length")

    # Token-id prompts, several prompts, seeded sampling, logprobs.
    kw = dict(model="tiny-a", prompt=[5, 6, 7, 8], max_tokens=10, temperature=0.9, seed=7,
              logprobs=2)
    a, b = client.completions.create(**kw), client.completions.create(**kw)
    check("a seed gives the same text", a.choices[0].text == b.choices[0].text)
    lp = a.choices[0].logprobs
    check("logprobs: one per token, 2 alternatives",
          lp is not None and len(lp.token_logprobs) == a.usage.completion_tokens
          and all(len(t) >= 1 for t in lp.top_logprobs) and all(v <= 0 for v in lp.token_logprobs),
          str(lp))
    m = client.completions.create(model="tiny-a", prompt=["one two", "three four"], max_tokens=4,
                                  temperature=0)
    check("two prompts, two choices", [c.index for c in m.choices] == [0, 1])

    # A stop string: the text ends before it, finish_reason stop.
    full = r.choices[0].text
    stop = full[3:6] if len(full) >= 6 else None
    if stop:
        s = client.completions.create(model="tiny-a", prompt=prompt, max_tokens=12,
                                      temperature=0, stop=[stop])
        check("stop string cuts the text before it", s.choices[0].text == full[:full.find(stop)],
              f"{s.choices[0].text!r} stop {stop!r} in {full!r}")
        check("stop string: finish_reason stop", s.choices[0].finish_reason == "stop")
        st = list(client.completions.create(model="tiny-a", prompt=prompt, max_tokens=12,
                                            temperature=0, stop=[stop], stream=True))
        check("streamed stop string cuts too",
              "".join(c.choices[0].text for c in st if c.choices) == full[:full.find(stop)])
    else:
        check("greedy text long enough for a stop-string check", False, repr(full))

    # Errors as OpenAI's error object with the right status.
    for name, args, exc in [
            ("negative temperature -> 400", dict(temperature=-1), openai.BadRequestError),
            ("n = 2 -> 400", dict(n=2), openai.BadRequestError),
            ("token id outside the vocabulary -> 400", dict(prompt=[1, 10**6]), openai.BadRequestError),
            ("a field of the wrong type -> 400", dict(extra_body={"ignore_eos": "yes"}), openai.BadRequestError),
            ("a priority past int32 -> 400", dict(extra_body={"priority": 2**31}), openai.BadRequestError),
            # Bounded before anything walks them (5M stop ids once took the service down), and
            # read wide: 2^32 + 197 is refused, not wrapped to 197.
            ("a stop id of 2^32 + 197 -> 400", dict(extra_body={"stop_token_ids": [2**32 + 197]}),
             openai.BadRequestError),
            ("257 stop ids -> 400", dict(extra_body={"stop_token_ids": [1] * 257}),
             openai.BadRequestError),
            ("a stop string of 257 bytes -> 400", dict(stop=["x" * 257]), openai.BadRequestError),
            ("past the queue bound -> 429", dict(prompt=["a b", "c d", "e f", "g h"]), openai.RateLimitError)]:
        kw = dict(model="tiny-a", prompt="hello", max_tokens=4)
        kw.update(args)
        try:
            client.completions.create(**kw)
            check(name, False, "no error")
        except exc as e:
            body = e.body if isinstance(e.body, dict) else {}
            check(name, "message" in body, str(e.body))

    # A body that is not UTF-8: a 400 with OpenAI's error object (the parse error quoting the
    # bytes was a 500 when the error itself could not be written as JSON).
    req = urllib.request.Request(f"http://127.0.0.1:{http_port}/v1/completions", method="POST",
                                 data=b'{"model": "tiny-a", "prompt": "\xff\xfe", "max_tokens": 2}',
                                 headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req, timeout=10)
        check("a body that is not UTF-8 -> 400", False, "no error")
    except urllib.error.HTTPError as e:
        body = e.read()
        try:
            err = json.loads(body).get("error", {})
        except ValueError:
            err = {}
        check("a body that is not UTF-8 -> 400", e.code == 400 and "message" in err,
              f"{e.code} {body[:200]!r}")

    # Bounded before buffered: a body over the limit is refused from its Content-Length (413),
    # and the metrics port takes no bodies at all (405), neither waiting for the body to come
    # (before, both read it whole, here waiting 5 s for one never sent).
    code, secs = headers_only(http_port, "/v1/completions", 100 << 20)
    check("a 100 MB body -> 413 from its Content-Length", code == 413 and secs < 3,
          f"{code} after {secs:.1f} s")
    code, secs = headers_only(metrics_port, "/metrics", 100 << 20)
    check("a POST to the metrics port -> 405 from its headers", code == 405 and secs < 3,
          f"{code} after {secs:.1f} s")

    # Slow clients do not starve the servers (slowloris): more trickling connections than each
    # port has threads (128 and 32), each sending a byte of its headers every 0.5 s, then a
    # scrape and a completion still answer within a second (before: both timed out).
    slow, stop = [], threading.Event()
    for port, n in ((http_port, 160), (metrics_port, 48)):
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            slow.append(s)

    def trickle():
        while not stop.wait(0.5):
            for s in slow:
                try:
                    s.send(b"a")
                except OSError:
                    pass
    trickler = threading.Thread(target=trickle)
    trickler.start()
    try:
        time.sleep(1)
        t = time.time()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
                scrape = r.read().decode()
        except OSError as e:
            scrape = f"no answer: {e}"
        check("a scrape answers within 1 s beside 208 trickling clients",
              time.time() - t < 1 and "# TYPE" in scrape, f"{time.time() - t:.2f} s, {scrape[:80]}")
        waiting = re.search(r'moe_http_waiting_connections\{port="openai"\} (\d+)', scrape)
        check("the OpenAI port's trickling clients wait without a thread (/metrics)",
              waiting is not None and int(waiting.group(1)) == 160,
              waiting.group(0) if waiting else "no moe_http_waiting_connections")
        t = time.time()
        try:
            r2 = client.with_options(timeout=5, max_retries=0).completions.create(
                model="tiny-a", prompt=[5, 6], max_tokens=2, temperature=0)
            answer = "ok" if r2.choices else "no choices"
        except openai.APIError as e:
            answer = f"no answer: {e}"
        check("a completion answers within 1 s beside 208 trickling clients",
              time.time() - t < 1 and answer == "ok", f"{time.time() - t:.2f} s, {answer}")
    finally:
        stop.set()
        trickler.join()
        for s in slow:
            s.close()

    # No worker attached: 503. This coordinator has API keys on: a wrong key is a 401.
    port2, grpc2 = free_port(), free_port()
    env = dict(os.environ, MOE_WORKER_SECRET="openai-test-secret-0123456789",
               MOE_API_KEYS="openai-key-0001,openai-key-0002")
    bare = subprocess.Popen([f"{BIN}/moe-coordinator", "--listen", f"127.0.0.1:{grpc2}",
                             "--metrics-port", "0", "--openai-port", str(port2)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    check("/health is 503 without a worker", wait_http(f"http://127.0.0.1:{port2}/health") == 503)
    wrong = openai.OpenAI(base_url=f"http://127.0.0.1:{port2}/v1", api_key="not-a-key", max_retries=0)
    try:
        wrong.models.list()
        check("wrong API key -> 401", False, "no error")
    except openai.AuthenticationError as e:
        check("wrong API key -> 401", e.status_code == 401, str(e))
    # The key is checked from the headers, before a body is read: no key, a 401 at once.
    code, secs = headers_only(port2, "/v1/completions", 50 << 20)
    check("no API key -> 401 before the body is read", code == 401 and secs < 3,
          f"{code} after {secs:.1f} s")
    c2 = openai.OpenAI(base_url=f"http://127.0.0.1:{port2}/v1", api_key="openai-key-0002", max_retries=0)
    check("the right API key lists the model", [m.id for m in c2.models.list().data] != [])
    try:
        c2.completions.create(model="moe", prompt=[1, 2], max_tokens=2)
        check("no worker -> 503", False, "no error")
    except openai.APIStatusError as e:
        check("no worker -> 503", e.status_code == 503, str(e))
finally:
    for p in (bare, launch):
        if p is not None and p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM) if p is launch else p.terminate()
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()

print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)

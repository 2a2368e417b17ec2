#!/usr/bin/env python3
"""Serving benchmark over the OpenAI-compatible API, in the terms vLLM's serving benchmark uses:
request throughput, output tokens/s, time to first token (TTFT), inter-token latency (ITL) and
end-to-end latency, as mean / p50 / p90 / p99, on a fixed random dataset (token-id prompts of
random lengths from a seed, so two runs send the same requests). Standard library only.

  build/bin/moe-launch --np 2 --config configs/tiny_a.yaml --openai-port 8000 &
  python3 scripts/bench_openai.py --base-url http://127.0.0.1:8000 --requests 512 --concurrency 32

Each of --concurrency threads sends streamed completions back to back (ignore_eos, so every
request makes exactly --max-tokens tokens); TTFT is the time to the first streamed text, ITL
the gaps between later events. Exit status 1 when any request failed.
"""
import argparse
import http.client
import json
import random
import statistics
import sys
import threading
import time
import urllib.parse


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--base-url", default="http://127.0.0.1:8000", help="the server (no /v1)")
    p.add_argument("--model", default="moe", help="model name sent in each request")
    p.add_argument("--requests", type=int, default=256, help="requests in all")
    p.add_argument("--concurrency", type=int, default=16, help="requests in flight at once")
    p.add_argument("--prompt-len", type=int, default=32,
                   help="mean prompt length in tokens (uniform in [len/2, 3*len/2])")
    p.add_argument("--max-tokens", type=int, default=32, help="tokens generated per request")
    p.add_argument("--vocab", type=int, default=512,
                   help="prompt token ids are drawn from [3, vocab)")
    p.add_argument("--seed", type=int, default=0, help="seed of the dataset")
    p.add_argument("--warmup", type=int, default=8, help="requests sent first, not measured")
    p.add_argument("--json", default="", help="also write the figures here as JSON")
    return p.parse_args()


def dataset(a):
    rng = random.Random(a.seed)
    n = a.requests + a.warmup
    lo, hi = max(1, a.prompt_len // 2), max(1, a.prompt_len * 3 // 2)
    return [[rng.randrange(3, a.vocab) for _ in range(rng.randint(lo, hi))] for _ in range(n)]


def one_request(url, model, prompt, max_tokens):
    """Returns (ok, ttft, [itl...], e2e, output_tokens, error)."""
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": max_tokens,
                       "temperature": 0, "ignore_eos": True, "stream": True,
                       "stream_options": {"include_usage": True}})
    t0 = time.perf_counter()
    try:
        conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        r = conn.getresponse()
        if r.status != 200:
            return False, 0, [], 0, 0, f"HTTP {r.status}: {r.read()[:200]!r}"
        ttft, last, itl, tokens = None, None, [], 0
        for raw in r:
            line = raw.decode().strip()
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                break
            ev = json.loads(data)
            if "error" in ev:
                return False, 0, [], 0, 0, ev["error"].get("message", "error")
            if ev.get("usage"):
                tokens = ev["usage"]["completion_tokens"]
            if ev.get("choices") and ev["choices"][0].get("text"):
                now = time.perf_counter()
                if ttft is None:
                    ttft = now - t0
                else:
                    itl.append(now - last)
                last = now
        e2e = time.perf_counter() - t0
        return True, ttft if ttft is not None else e2e, itl, e2e, tokens, ""
    except (OSError, http.client.HTTPException) as e:
        return False, 0, [], 0, 0, str(e)
    finally:
        conn.close()


def pct(v, q):
    if not v:
        return float("nan")
    v = sorted(v)
    return v[min(len(v) - 1, int(q / 100 * len(v)))]


def main():
    a = parse_args()
    prompts = dataset(a)
    for p in prompts[:a.warmup]:
        one_request(a.base_url, a.model, p, a.max_tokens)
    todo = list(enumerate(prompts[a.warmup:]))
    lock = threading.Lock()
    results = []

    def worker():
        while True:
            with lock:
                if not todo:
                    return
                _, p = todo.pop()
            r = one_request(a.base_url, a.model, p, a.max_tokens)
            with lock:
                results.append(r)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(a.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ok = [r for r in results if r[0]]
    failed = [r for r in results if not r[0]]
    ttft = [r[1] for r in ok]
    itl = [x for r in ok for x in r[2]]
    e2e = [r[3] for r in ok]
    out_tokens = sum(r[4] for r in ok)
    fig = {
        "requests": len(results), "failed": len(failed), "concurrency": a.concurrency,
        "duration_s": wall, "request_throughput": len(ok) / wall,
        "output_tokens_per_s": out_tokens / wall,
        "ttft_ms": {k: 1e3 * f for k, f in [("mean", statistics.fmean(ttft) if ttft else float("nan")),
                                             ("p50", pct(ttft, 50)), ("p90", pct(ttft, 90)),
                                             ("p99", pct(ttft, 99))]},
        "itl_ms": {k: 1e3 * f for k, f in [("mean", statistics.fmean(itl) if itl else float("nan")),
                                            ("p50", pct(itl, 50)), ("p90", pct(itl, 90)),
                                            ("p99", pct(itl, 99))]},
        "e2e_ms": {k: 1e3 * f for k, f in [("p50", pct(e2e, 50)), ("p99", pct(e2e, 99))]},
    }
    print(f"{'successful requests':<34}{len(ok):>12}")
    print(f"{'failed requests':<34}{len(failed):>12}")
    print(f"{'duration (s)':<34}{wall:>12.2f}")
    print(f"{'request throughput (req/s)':<34}{fig['request_throughput']:>12.1f}")
    print(f"{'output token throughput (tok/s)':<34}{fig['output_tokens_per_s']:>12.1f}")
    for name, key in [("TTFT", "ttft_ms"), ("ITL", "itl_ms")]:
        d = fig[key]
        print(f"{name + ' (ms) mean / p50 / p90 / p99':<34}"
              f"{d['mean']:>8.2f} {d['p50']:>8.2f} {d['p90']:>8.2f} {d['p99']:>8.2f}")
    print(f"{'E2E latency (ms) p50 / p99':<34}{fig['e2e_ms']['p50']:>8.2f} {fig['e2e_ms']['p99']:>8.2f}")
    if failed:
        print(f"first failure: {failed[0][5]}", file=sys.stderr)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(fig, f, indent=2)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

"""Aggregate generation speed of `prima serve`: one stream alone, then N streams at once.
Usage: python bench/serve_concurrency.py PRIMA_BINARY MODEL.gguf [N=4] [TOKENS=64]
Needs the `openai` package (tests/run.sh puts it in target/serve-venv). Prints tokens/s and
the ratio; every stream generates exactly TOKENS tokens (ignore_eos is not an OpenAI field, so
a greedy completion prompt that does not end early is used and checked)."""

import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "serve"))
import test_api  # noqa: E402


def run(client, model_id, n, tokens):
    done = [0] * n

    def one(i):
        s = client.completions.create(model=model_id, prompt=f"Story {i}: Once upon a time, in a land far away,",
                                      max_tokens=tokens, temperature=0, stream=True, stream_options={"include_usage": True})
        for ch in s:
            if ch.usage:
                done[i] = ch.usage.completion_tokens

    t0 = time.time()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    dt = time.time() - t0
    return sum(done), dt


def main():
    binary, model = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 4
    tokens = int(sys.argv[4]) if len(sys.argv) > 4 else 64
    model_id = os.path.splitext(os.path.basename(model))[0]
    srv = test_api.Server(binary, model, key=False)
    try:
        c = srv.client()
        run(c, model_id, 1, 8)  # warm up
        results = []
        for _ in range(3):  # interleaved repeats; medians below
            t1, d1 = run(c, model_id, 1, tokens)
            tn, dn = run(c, model_id, n, tokens)
            results.append((t1 / d1, tn / dn))
            print(f"1 stream: {t1} tokens in {d1:.2f} s = {t1 / d1:.1f} tok/s | {n} streams: {tn} tokens in {dn:.2f} s = {tn / dn:.1f} tok/s", flush=True)
        one = sorted(r[0] for r in results)[1]
        many = sorted(r[1] for r in results)[1]
        print(f"median: 1 stream {one:.1f} tok/s, {n} streams {many:.1f} tok/s aggregate, ratio {many / one:.2f}x")
    finally:
        srv.stop()


if __name__ == "__main__":
    main()

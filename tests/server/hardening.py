"""`slimkv serve` for operators (issue 12, findings 6-11), loopback only, bounded in time.

  6  idle RSS with default flags <= model file + KV budget + 100 MB; connections cost no thread
  7  a prompt + max_tokens the KV pool cannot hold is 400 naming the numbers; omitted, max_tokens
     is cut to what fits and the request ends with "length", its text kept
  8  a non-streaming request is cancelled when its client goes away; --request-timeout
  9  the prefix cache is per API key: another key's secret system prompt is not an oracle
  10 Host and Origin checks, JSON only as application/json, CORS opt-in, keys from a file and
     from SLIMKV_API_KEY, several keys, "bearer" in any case
  11 access log lines with request ids (-v), X-Request-Id echoed, vLLM metric names
Each check fails against the server of bb8f74c. Run by server/hardening_test.sh under ctest.
"""
import json
import os
import re
import tempfile
import time

from serve_util import (Checks, Server, assert_cancelled, metrics, post_bytes, raw_connect, raw_request,
                        read_response, request, rss_bytes, thread_count, wait_for)

MiB = 1 << 20
SYSTEM = ("You are the assistant of ACME Corp. The vault code is 4417-ALPHA and must never be told. "
          "Answer briefly and politely. ") * 4


def post(srv, path, body, key=None, timeout=60, headers=None):
    h = dict(headers or {})
    if key:
        h["Authorization"] = f"Bearer {key}"
    st, hd, raw = request(srv.url + path, "POST", body, headers=h, timeout=timeout)
    return st, hd, json.loads(raw) if raw else None


def cached(resp):
    return resp["usage"]["prompt_tokens_details"]["cached_tokens"]


def main():
    checks = Checks()
    # 6: default flags.
    with Server() as srv:
        def idle_memory():
            post(srv, "/v1/completions", {"prompt": "Hello", "max_tokens": 8})
            time.sleep(1)
            budget = metrics(srv.url)["slimkv_kv_budget_bytes"]
            model = os.path.getsize(srv.model)
            rss = rss_bytes(srv.proc.pid)
            assert rss <= model + budget + 100 * MiB, (
                f"idle RSS {rss / MiB:.0f} MiB > model {model / MiB:.0f} + KV budget {budget / MiB:.0f} + 100 MiB")

        def connections_cost_no_thread():
            threads0, rss0 = thread_count(srv.proc.pid), rss_bytes(srv.proc.pid)
            conns = [raw_connect(srv.port) for _ in range(100)]
            for c in conns[:50]:
                c.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # half a header
            time.sleep(0.5)
            threads, rss = thread_count(srv.proc.pid), rss_bytes(srv.proc.pid)
            for c in conns:
                c.close()
            assert threads <= 12 and threads == threads0, (threads0, threads)
            assert rss - rss0 < 16 * MiB, f"100 connections took {(rss - rss0) / MiB:.1f} MiB"

        checks.run("idle RSS", idle_memory)
        checks.run("connections cost no thread", connections_cost_no_thread)

    # 7: a pool of 160 tokens for one request, under a 4096-token context.
    with Server("-c", "4096", "--kv-mem", "4") as srv:
        def too_long_for_the_pool():
            st, _, body = post(srv, "/v1/completions", {"prompt": "Tell a story.", "max_tokens": 1000})
            assert st == 400, (st, body)
            msg = body["error"]["message"]
            assert body["error"]["code"] == "context_length_exceeded", body
            nums = [int(x) for x in re.findall(r"\d+", msg)]
            assert 1000 in nums and 4096 in nums, msg
            most = min(n for n in nums if n > 50)
            assert most < 400, msg  # the pool's tokens for one request, named
            # Omitted: cut to what fits, and the text is kept ("length" or "stop", never 429).
            st, _, body = post(srv, "/v1/chat/completions",
                               {"messages": [{"role": "user", "content": "Count to a thousand."}],
                                "ignore_eos": True})
            assert st == 200, (st, body)
            assert body["choices"][0]["finish_reason"] == "length", body
            assert body["choices"][0]["message"]["content"], body
            assert body["usage"]["total_tokens"] <= most, (body["usage"], most)

        checks.run("prompt + max_tokens past the pool", too_long_for_the_pool)

    # 8: a per-request time limit of one second.
    with Server("-c", "2048", "--kv-mem", "64", "--request-timeout", "1") as srv:
        def disconnect_cancels_non_streaming():
            before = metrics(srv.url)
            s = raw_connect(srv.port)
            s.sendall(post_bytes("/v1/completions", json.dumps(
                {"prompt": "Count slowly:", "max_tokens": 1500, "ignore_eos": True}).encode()))
            wait_for(lambda: metrics(srv.url)["slimkv_requests_running"] == 1, 10, "the request to run")
            s.close()
            assert_cancelled(srv.url, before, 5, 1500)

        def request_time_limit():
            t0 = time.time()
            st, _, body = post(srv, "/v1/completions", {"prompt": "Count:", "max_tokens": 1500, "ignore_eos": True,
                                                        "temperature": 0})
            took = time.time() - t0
            assert st == 200, (st, body)
            assert body["choices"][0]["finish_reason"] == "length", body
            assert 0 < body["usage"]["completion_tokens"] < 1500, body["usage"]
            assert took < 4, f"took {took:.1f} s with --request-timeout 1"
            s = raw_connect(srv.port)
            s.sendall(post_bytes("/v1/completions", json.dumps(
                {"prompt": "Count:", "max_tokens": 1500, "ignore_eos": True, "stream": True}).encode()))
            r = read_response(s, 10)
            s.close()
            events = [e for e in r[2].decode().split("\n\n") if e.startswith("data: ")]
            assert events[-1] == "data: [DONE]", events[-3:]
            assert json.loads(events[-2][6:])["choices"][0]["finish_reason"] == "length", events[-2]

        checks.run("disconnect cancels a non-streaming request", disconnect_cancels_non_streaming)
        checks.run("request time limit", request_time_limit)

    # 9, 10, 11: keys from the flag, a file and the environment; CORS for one origin; -v.
    with tempfile.NamedTemporaryFile("w", suffix=".keys", delete=False) as f:
        f.write("# keys\nkey-b\n\nkey-c\n")
        key_file = f.name
    try:
        with Server("-c", "512", "--kv-mem", "64", "--api-key", "key-a", "--api-key-file", key_file,
                    "--cors-origin", "http://localhost:3000", "-v", env={"SLIMKV_API_KEY": "key-env"}) as srv:
            def tenants_per_key():
                prompt = SYSTEM + "User: what is the weather?"
                first = post(srv, "/v1/completions", {"prompt": prompt, "max_tokens": 2}, "key-a")[2]
                probe = post(srv, "/v1/completions", {"prompt": prompt, "max_tokens": 2}, "key-b")[2]
                again = post(srv, "/v1/completions", {"prompt": prompt, "max_tokens": 2}, "key-a")[2]
                probe_salted = post(srv, "/v1/completions", {"prompt": prompt, "max_tokens": 2, "cache_salt": "x"},
                                    "key-b")[2]
                assert cached(first) == 0, first["usage"]
                assert cached(probe) == 0, "another key's prompt was found in the cache (oracle)"
                assert cached(again) >= 64, again["usage"]
                assert cached(probe_salted) == 0
                probe2 = post(srv, "/v1/completions", {"prompt": prompt, "max_tokens": 2}, "key-b")[2]
                assert cached(probe2) >= 64, "a key does not reuse its own cache"

            def keys_and_bearer():
                for key in ["key-a", "key-b", "key-c", "key-env"]:
                    st, _, body = post(srv, "/v1/completions", {"prompt": "Hi", "max_tokens": 1}, key)
                    assert st == 200, (key, st, body)
                st, _, _ = post(srv, "/v1/completions", {"prompt": "Hi", "max_tokens": 1}, "key-d")
                assert st == 401
                st, _, _ = post(srv, "/v1/completions", {"prompt": "Hi", "max_tokens": 1},
                                headers={"Authorization": "bearer key-a"})
                assert st == 200, "the bearer scheme is case-insensitive"

            def host_origin_and_media_type():
                body = b'{"prompt": "Hi", "max_tokens": 1}'
                auth = b"Authorization: Bearer key-a\r\n"
                r = raw_request(srv.port, post_bytes("/v1/completions", body, auth, host=b"rebind.attacker.example"))
                assert r[0] == 403 and b"Host" in r[2], r
                r = raw_request(srv.port, b"GET /health HTTP/1.1\r\nHost: localhost:%d\r\n\r\n" % srv.port)
                assert r[0] == 200, r
                r = raw_request(srv.port, post_bytes("/v1/completions", body, auth + b"Origin: http://evil.example\r\n"))
                assert r[0] == 403, r
                r = raw_request(srv.port, post_bytes("/v1/completions", body, auth, content_type=b"text/plain"))
                assert r[0] == 415, r
                r = raw_request(srv.port, post_bytes("/v1/completions", body, auth + b"Origin: http://localhost:3000\r\n"))
                assert r[0] == 200 and r[1].get("access-control-allow-origin") == "http://localhost:3000", r[1]
                r = raw_request(srv.port, b"OPTIONS /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: "
                                b"http://localhost:3000\r\nAccess-Control-Request-Method: POST\r\n\r\n")
                assert r[0] == 204 and "POST" in r[1].get("access-control-allow-methods", ""), r
                r = raw_request(srv.port, b"OPTIONS /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: "
                                b"http://evil.example\r\nAccess-Control-Request-Method: POST\r\n\r\n")
                assert r[0] == 403, r

            def request_ids_and_access_log():
                st, hd, _ = request(srv.url + "/health", headers={"X-Request-Id": "client-id-7"})
                assert st == 200 and hd.get("X-Request-Id") == "client-id-7", hd
                st, hd, _ = request(srv.url + "/health", headers={"X-Request-Id": "bad id\x01"})
                ours = hd.get("X-Request-Id", "")
                assert ours.startswith("req-"), hd
                wait_for(lambda: "client-id-7" in srv.log() and ours in srv.log(), 5, "access log lines")
                line = next(ln for ln in srv.log().splitlines() if "client-id-7" in ln)
                assert '"GET /health" 200' in line, line

            def vllm_metrics():
                m = metrics(srv.url)
                label = 'model_name="SmolLM2-135M-Instruct.Q4_1"'
                for name in ["vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                             "vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total",
                             "vllm:time_to_first_token_seconds_count", "vllm:inter_token_latency_seconds_count"]:
                    assert f"{name}{{{label}}}" in m, name
                assert m[f"vllm:prefix_cache_hits_total{{{label}}}"] >= 64

            checks.run("prefix cache per API key", tenants_per_key)
            checks.run("several keys, bearer in any case", keys_and_bearer)
            checks.run("Host, Origin, media type, CORS", host_origin_and_media_type)
            checks.run("request ids and access log", request_ids_and_access_log)
            checks.run("vLLM metric names", vllm_metrics)
    finally:
        os.unlink(key_file)
    checks.finish()


if __name__ == "__main__":
    main()

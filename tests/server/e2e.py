"""End-to-end checks of `slimkv serve`: the official `openai` client unchanged (completions,
chat, streaming with include_usage, n, models, errors), plain HTTP for what the client does
not show (error objects and codes, 401/404/413/429, metrics format), prefix-cache hits in
usage, a client that disconnects mid-stream, and SIGTERM draining.

Run by server/e2e_test.sh under ctest; prints one line per check and 'N passed, N failed'.
"""
import json
import re
import socket
import tempfile
import threading
import time

import openai

from serve_util import Checks, Server, assert_cancelled, metrics, request, wait_for

SYSTEM = ("You are a careful assistant. Answer in one short sentence and never invent facts. "
          "If a question is unclear, say so. ") * 6


def client(srv, key="none"):
    return openai.OpenAI(base_url=srv.url + "/v1", api_key=key, max_retries=0, timeout=120)


def main():
    checks = Checks()
    with Server("-c", "512", "--kv-mem", "64", "--max-tokens-limit", "256") as srv:
        c = client(srv)

        def completions():
            r = c.completions.create(model="any", prompt="The capital of France is", max_tokens=12, temperature=0)
            assert r.object == "text_completion"
            assert len(r.choices) == 1 and r.choices[0].text.strip(), r
            assert r.choices[0].finish_reason in ("stop", "length")
            assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
            assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
            assert "cached_tokens" in r.usage.model_dump()["prompt_tokens_details"]
            again = c.completions.create(model="any", prompt="The capital of France is", max_tokens=12, temperature=0)
            assert again.choices[0].text == r.choices[0].text, "greedy output is not repeatable"

        def chat():
            r = c.chat.completions.create(model="any", messages=[{"role": "user", "content": "Name a color."}],
                                          max_tokens=16, temperature=0)
            assert r.object == "chat.completion"
            assert r.choices[0].message.role == "assistant"
            assert r.choices[0].message.content, r

        def chat_stream_with_usage():
            msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello."}]
            full = c.chat.completions.create(model="any", messages=msgs, max_tokens=20, temperature=0)
            stream = c.chat.completions.create(model="any", messages=msgs, max_tokens=20, temperature=0,
                                               stream=True, stream_options={"include_usage": True})
            text, finish, usage, chunks = "", None, None, 0
            for chunk in stream:
                chunks += 1
                if chunk.usage is not None:
                    usage = chunk.usage
                for ch in chunk.choices:
                    text += ch.delta.content or ""
                    finish = ch.finish_reason or finish
            assert chunks > 2, chunks
            assert text == full.choices[0].message.content, (text, full.choices[0].message.content)
            assert finish == full.choices[0].finish_reason
            assert usage is not None and usage.completion_tokens == full.usage.completion_tokens
            assert usage.prompt_tokens == full.usage.prompt_tokens

        def completion_stream():
            pieces = [ch.choices[0].text for ch in
                      c.completions.create(model="any", prompt="One, two, three,", max_tokens=10, temperature=0,
                                           stream=True) if ch.choices]
            full = c.completions.create(model="any", prompt="One, two, three,", max_tokens=10, temperature=0)
            assert "".join(pieces) == full.choices[0].text

        def n_choices_and_seed():
            r = c.completions.create(model="any", prompt="Once upon a time", max_tokens=8, n=2, seed=5,
                                     temperature=1.0)
            assert sorted(ch.index for ch in r.choices) == [0, 1]
            again = c.completions.create(model="any", prompt="Once upon a time", max_tokens=8, n=2, seed=5,
                                         temperature=1.0)
            assert [ch.text for ch in r.choices] == [ch.text for ch in again.choices], "seeded sampling differs"

        def models():
            ms = c.models.list()
            ids = [m.id for m in ms.data]
            assert ids == ["SmolLM2-135M-Instruct.Q4_1"], ids
            assert c.models.retrieve(ids[0]).id == ids[0]
            try:
                c.models.retrieve("no-such-model")
                raise AssertionError("expected 404")
            except openai.NotFoundError:
                pass

        def too_long_prompt():
            prompt = " hello" * 600
            try:
                c.completions.create(model="any", prompt=prompt, max_tokens=4)
                raise AssertionError("expected 400")
            except openai.BadRequestError as e:
                msg = e.body["message"] if isinstance(e.body, dict) else str(e)
                nums = [int(x) for x in re.findall(r"\d+", msg)]
                assert 512 in nums and any(n > 512 for n in nums), msg
                assert e.body["code"] == "context_length_exceeded", e.body

        def error_objects():
            for path, body, status in [("/v1/completions", b"{not json", 400),
                                       ("/v1/completions", {"prompt": "x", "max_tokens": 100000}, 400),
                                       ("/v1/completions", {"prompt": "x", "n": 99}, 400),
                                       ("/v1/chat/completions", {"messages": "hi"}, 400),
                                       ("/v1/completions", {"prompt": "x", "temperature": "hot"}, 400),
                                       ("/v1/nothing", {"prompt": "x"}, 404),
                                       ("/v1/completions", b"{" + b" " * (2 << 20) + b"}", 413)]:
                st, headers, raw = request(srv.url + path, "POST", body)
                assert st == status, (path, st, raw[:200])
                err = json.loads(raw)["error"]
                assert set(err) == {"message", "type", "param", "code"}, err
                assert err["message"], err

        def prefix_cache_hit():
            prompt = SYSTEM + "Question: what is two plus two?"
            first = c.completions.create(model="any", prompt=prompt, max_tokens=4, temperature=0,
                                         extra_body={"cache_salt": "tenant-1"})
            second = c.completions.create(model="any", prompt=prompt, max_tokens=4, temperature=0,
                                          extra_body={"cache_salt": "tenant-1"})
            other = c.completions.create(model="any", prompt=prompt, max_tokens=4, temperature=0,
                                         extra_body={"cache_salt": "tenant-2"})
            cached = lambda r: r.usage.model_dump()["prompt_tokens_details"]["cached_tokens"]
            assert cached(first) == 0, cached(first)
            assert cached(second) >= 64 and cached(second) % 32 == 0, cached(second)
            assert cached(other) == 0, "a tenant reached another tenant's cache"
            assert second.choices[0].text == first.choices[0].text

        def metrics_format():
            st, headers, raw = request(srv.url + "/metrics")
            assert st == 200 and headers["Content-Type"].startswith("text/plain"), headers
            text = raw.decode()
            typed = set(re.findall(r"^# TYPE (\S+) (?:gauge|counter|histogram)$", text, re.M))
            for name in ["slimkv_kv_bytes_used", "slimkv_kv_bytes_free", "slimkv_kv_blocks_used",
                         "slimkv_kv_blocks_free", "slimkv_kv_blocks_shared", "slimkv_prefix_cache_hit_rate",
                         "slimkv_requests_running", "slimkv_requests_waiting", "slimkv_requests_preempted",
                         "slimkv_generation_tokens_per_second", "slimkv_time_to_first_token_seconds",
                         "slimkv_inter_token_latency_seconds"]:
                assert name in typed, name
            for line in text.splitlines():
                if not line.startswith("#"):
                    assert re.match(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? [-+0-9.eEinfINFa]+$', line), line
            m = metrics(srv.url)
            assert m['slimkv_time_to_first_token_seconds_bucket{le="+Inf"}'] == m["slimkv_time_to_first_token_seconds_count"]
            assert m["slimkv_time_to_first_token_seconds_count"] > 0
            assert m["slimkv_prefix_cache_hits_total"] >= 1
            st, _, raw = request(srv.url + "/health")
            assert st == 200 and json.loads(raw)["status"] == "ok"
            st, headers, raw = request(srv.url + "/")
            assert st == 200 and b"<canvas" in raw and headers["Content-Type"].startswith("text/html")

        def disconnect_cancels():
            before = metrics(srv.url)
            s = socket.create_connection(("127.0.0.1", srv.port))
            body = json.dumps({"prompt": "Count slowly:", "max_tokens": 250, "stream": True, "ignore_eos": True})
            s.sendall((f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                       f"Content-Length: {len(body)}\r\n\r\n{body}").encode())
            got = b""
            while got.count(b"data: ") < 5:
                got += s.recv(4096)
            s.close()
            assert_cancelled(srv.url, before, 30, 250)

        for name, fn in [("completions", completions), ("chat", chat), ("chat stream + usage", chat_stream_with_usage),
                         ("completion stream", completion_stream), ("n and seed", n_choices_and_seed),
                         ("models", models), ("too long prompt", too_long_prompt), ("error objects", error_objects),
                         ("prefix cache hit", prefix_cache_hit), ("metrics", metrics_format),
                         ("disconnect cancels", disconnect_cancels)]:
            checks.run(name, fn)

        def no_leaked_blocks():
            m = metrics(srv.url)
            assert m["slimkv_requests_running"] == 0 and m["slimkv_requests_waiting"] == 0
            # Idle: every block left is held by the prefix cache (90 streams per position).
            assert m["slimkv_kv_blocks_used"] == m["slimkv_prefix_cache_entries"] * 30 * 3, m
        checks.run("no leaked blocks", no_leaked_blocks)

    # KV tier series in /metrics: two identical requests hit the RAM prefix cache and write the disk
    # tier; a restarted server with the same --kv-disk answers the same prompt from disk.
    with tempfile.TemporaryDirectory() as disk:
        tier_args = ("-c", "512", "--kv-mem", "64", "--kv-disk", disk, "--kv-disk-mem", "0.25")
        ask = dict(model="m", prompt=SYSTEM + "Name a prime number.", max_tokens=4, temperature=0)

        def settled(url):  # idle, and a moment for the tiers' writer thread
            wait_for(lambda: metrics(url)["slimkv_requests_running"] == 0, 30, "idle")
            time.sleep(0.5)
            return metrics(url)

        with Server(*tier_args) as srv:
            def tiers_in_metrics():
                before = settled(srv.url)
                for key in ['slimkv_kv_tier_hits_total{tier="ram"}', 'slimkv_kv_tier_hits_total{tier="disk"}',
                            'slimkv_kv_tier_misses_total{tier="disk"}', 'slimkv_kv_tier_blocks{tier="disk"}',
                            'slimkv_kv_tier_bytes{tier="ram"}', 'slimkv_kv_tier_written_bytes_total{tier="disk"}',
                            'slimkv_kv_tier_corrupt_total{tier="disk"}', 'slimkv_kv_tier_state{tier="disk",state="ok"}',
                            'slimkv_kv_tier_fetch_decisions_total{decision="recompute"}',
                            'slimkv_preempted_tokens_total{path="swap"}']:
                    assert key in before, key
                client(srv).completions.create(**ask)
                # The disk tier writes on its own thread, after the request has ended.
                written = 'slimkv_kv_tier_written_bytes_total{tier="disk"}'
                wait_for(lambda: metrics(srv.url)[written] > 0, 30, "the disk tier's first write")
                first = settled(srv.url)
                client(srv).completions.create(**ask)
                second = settled(srv.url)
                ram = 'slimkv_kv_tier_hits_total{tier="ram"}'
                assert second[ram] > first[ram] >= before[ram], (before[ram], first[ram], second[ram])
                assert first['slimkv_kv_tier_written_bytes_total{tier="disk"}'] > 0
                assert second['slimkv_kv_tier_blocks{tier="disk"}'] > 0
                assert second['slimkv_kv_tier_bytes{tier="disk"}'] > 0
                assert second['slimkv_kv_tier_bytes{tier="ram"}'] > 0
                assert second['slimkv_kv_tier_state{tier="disk",state="ok"}'] == 1
                assert second['slimkv_kv_tier_state{tier="disk",state="full"}'] == 0
            checks.run("tier metrics: ram hit, disk write", tiers_in_metrics)

        with Server(*tier_args) as srv:
            def disk_hit_after_restart():
                before = settled(srv.url)
                client(srv).completions.create(**ask)
                after = settled(srv.url)
                hits = 'slimkv_kv_tier_hits_total{tier="disk"}'
                assert after[hits] > before[hits] == 0, (before[hits], after[hits])
                assert after['slimkv_kv_tier_read_bytes_total{tier="disk"}'] > 0
                assert after['slimkv_kv_tier_misses_total{tier="ram"}'] > 0
                assert after["slimkv_kv_tier_blocks_fetched_total"] > 0
                assert after['slimkv_kv_tier_fetch_decisions_total{decision="fetch"}'] >= 1
            checks.run("tier metrics: disk hit after restart", disk_hit_after_restart)

    # Recall past its host bound through serve: with --kv-disk the host blocks past :host=2 are
    # spilled to the disk tier and read back when a query wants them, none lost, none dropped,
    # and once the request has ended no host memory is left to it.
    with tempfile.TemporaryDirectory() as disk:
        # A budget above int4's fp16 window (128 tokens): recall swaps only sealed blocks.
        with Server("-c", "2048", "--kv", "int4", "--kv-policy", "h2o:recall:host=2", "--kv-budget", "256",
                    "--kv-disk", disk, "--kv-disk-mem", "0.25") as srv:
            def recall_spill():
                r = client(srv).completions.create(model="m", prompt=SYSTEM * 6 + "Say something about the sea.",
                                                   max_tokens=48, temperature=0)
                assert r.usage.prompt_tokens > 800 and r.choices[0].text, r
                m = settled(srv.url)
                move = 'slimkv_kv_recall_blocks_total{{move="{}"}}'.format
                assert m[move("spilled")] > 0, m[move("spilled")]
                assert m[move("read_back")] > 0, m[move("read_back")]
                assert m[move("spill_lost")] == 0 and m[move("dropped")] == 0, m
                assert m["slimkv_kv_recall_host_bytes"] == 0, m["slimkv_kv_recall_host_bytes"]
            checks.run("recall spills to the disk tier", recall_spill)

    # Authentication and a full queue, on a server with one running and one waiting slot.
    with Server("-c", "256", "--kv-mem", "32", "--api-key", "sekret", "--max-running", "1",
                "--max-waiting", "1") as srv:

        def api_key():
            try:
                client(srv, "wrong").completions.create(model="m", prompt="hi", max_tokens=2)
                raise AssertionError("expected 401")
            except openai.AuthenticationError:
                pass
            st, _, raw = request(srv.url + "/v1/models")
            assert st == 401 and json.loads(raw)["error"]["type"] == "authentication_error"
            r = client(srv, "sekret").completions.create(model="m", prompt="hi", max_tokens=2)
            assert r.choices
            assert request(srv.url + "/health")[0] == 200  # health and metrics stay open

        def queue_full():
            k = client(srv, "sekret")
            streams = []
            long = dict(model="m", prompt="Tell a long story.", max_tokens=200, stream=True,
                        extra_body={"ignore_eos": True})
            streams.append(k.completions.create(**long))
            next(iter(streams[0]))
            wait_for(lambda: metrics(srv.url)["slimkv_requests_running"] == 1, 30, "one running")
            streams.append(k.completions.create(**long))
            wait_for(lambda: metrics(srv.url)["slimkv_requests_waiting"] == 1, 30, "one waiting")
            try:
                k.completions.create(model="m", prompt="hi", max_tokens=2)
                raise AssertionError("expected 429")
            except openai.RateLimitError as e:
                assert e.status_code == 429
            for s in streams:
                s.close()
            wait_for(lambda: metrics(srv.url)["slimkv_requests_running"] == 0, 60, "cancellation")

        checks.run("api key", api_key)
        checks.run("queue full", queue_full)

    # SIGTERM: the stream in flight finishes; meanwhile /health says "draining" and a new request
    # gets 503 (load balancers see the drain instead of refused connections); exit code 0.
    with Server("-c", "256", "--kv-mem", "32") as srv:

        def sigterm_drains():
            k = client(srv)
            stream = k.completions.create(model="m", prompt="Once upon a time", max_tokens=60, stream=True,
                                          extra_body={"ignore_eos": True})
            it = iter(stream)
            pieces = [next(it)]
            rc = []
            t = threading.Thread(target=lambda: rc.append(srv.terminate()))
            t.start()
            wait_for(lambda: "draining" in srv.log(), 10, "the drain to start")
            health = request(srv.url + "/health", timeout=5)
            late = request(srv.url + "/v1/completions", "POST", {"prompt": "hi", "max_tokens": 2}, timeout=5)
            pieces += list(it)
            t.join(120)
            finish = [p.choices[0].finish_reason for p in pieces if p.choices and p.choices[0].finish_reason]
            assert finish == ["length"], finish
            assert health[0] == 503 and json.loads(health[2])["status"] == "draining", health
            assert late[0] == 503 and json.loads(late[2])["error"]["code"] == "shutting_down", late
            assert rc == [0], (rc, srv.log())

        checks.run("SIGTERM drains", sigterm_drains)
    checks.finish()


if __name__ == "__main__":
    main()

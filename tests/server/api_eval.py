"""The API an evaluator uses (issue 16), against a live `slimkv serve`:

- perplexity from /v1/completions with echo + logprobs (what lm-evaluation-harness's
  local-completions model sends: token prompts, max_tokens 1, logprobs 1, echo) equals
  `slimkv ppl` on the same windows (same tokens, BOS first, the second half scored);
- logprobs/top_logprobs on chat and completions, streamed and whole;
- /tokenize and /detokenize (vLLM's and llama.cpp's field names);
- frequency/presence/repetition penalties accepted and checked;
- response_format json_object (constrained decoding): chat and completions, whole and
  streamed, greedy and sampled: a finished answer parses with json.loads as a dict;
  json_schema and unknown types are 400s with a message.

Run by server/api_eval_test.sh. ~40 s on 2 cores.
"""
import json
import math
import os
import subprocess
import tempfile

import openai

from serve_util import BIN, MODEL, SRC, Checks, Server, request

CTX, CHUNKS = 128, 3
TEXT = os.path.join(os.environ.get("SLIMKV_DATA_DIR") or os.path.join(SRC, "data"), "pg_essays.txt")


def ppl_cli():
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "ppl.json")
        subprocess.run([BIN, "ppl", "-m", MODEL, "-f", TEXT, "-c", str(CTX), "--chunks", str(CHUNKS),
                        "--kl-base", "none", "--json", out], check=True, capture_output=True, timeout=600)
        with open(out) as f:
            return json.load(f)


def main():
    checks = Checks()
    expected = ppl_cli()
    with open(TEXT, encoding="utf-8") as f:
        text = f.read(40000)
    with Server("-c", "512", "--parallel", "2") as srv:
        url = srv.url
        client = openai.OpenAI(base_url=url + "/v1", api_key="none")

        def post(path, body):
            status, _, data = request(url + path, "POST", body)
            return status, json.loads(data)

        tokens = post("/tokenize", {"prompt": text})[1]["tokens"]
        # As slimkv ppl cuts windows: the first token of each is BOS when the model adds one.
        has_bos = len(post("/tokenize", {"prompt": "Hello"})[1]["tokens"]) > len(
            post("/tokenize", {"prompt": "Hello", "add_special_tokens": False})[1]["tokens"])

        def perplexity():
            nll, scored = 0.0, 0
            for c in range(CHUNKS):
                window = tokens[c * CTX:(c + 1) * CTX]
                if has_bos:
                    window[0] = tokens[0]
                r = client.completions.create(model="m", prompt=window, max_tokens=1, temperature=0,
                                              logprobs=1, echo=True)
                lp = r.choices[0].logprobs
                assert len(lp.token_logprobs) == CTX + 1, len(lp.token_logprobs)  # prompt + 1 generated
                assert lp.token_logprobs[0] is None
                assert len(lp.top_logprobs[5]) == 1
                for t in range(CTX // 2 + 1, CTX):
                    nll -= lp.token_logprobs[t]
                    scored += 1
            ppl = math.exp(nll / scored)
            assert scored == expected["scored_tokens"], (scored, expected["scored_tokens"])
            assert abs(ppl - expected["ppl"]) <= 1e-4 * expected["ppl"], (ppl, expected["ppl"])
            print(f"     PPL over the API {ppl:.5f}, slimkv ppl {expected['ppl']:.5f} ({scored} tokens)")

        def echo_text():
            r = client.completions.create(model="m", prompt="The capital of France is", max_tokens=3,
                                          temperature=0, echo=True)
            assert r.choices[0].text.startswith("The capital of France is"), r.choices[0].text
            assert r.choices[0].logprobs is None

        def completion_logprobs():
            r = client.completions.create(model="m", prompt="One, two, three,", max_tokens=4, temperature=0,
                                          logprobs=3)
            lp = r.choices[0].logprobs
            assert len(lp.tokens) == 4 and len(lp.token_logprobs) == 4, lp
            assert "".join(lp.tokens) == r.choices[0].text, (lp.tokens, r.choices[0].text)
            for tok, l, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
                assert len(top) == 3 and l <= 0
                assert abs(max(top.values()) - l) < 1e-5, (tok, l, top)  # greedy: the top token
            assert lp.text_offset == [sum(len(t.encode()) for t in lp.tokens[:i]) for i in range(4)]

        def chat_logprobs():
            msgs = [{"role": "user", "content": "Say hello."}]
            r = client.chat.completions.create(model="m", messages=msgs, max_tokens=4, temperature=0,
                                               logprobs=True, top_logprobs=2)
            content = r.choices[0].logprobs.content
            assert len(content) == r.usage.completion_tokens, (len(content), r.usage)
            for c in content:
                assert len(c.top_logprobs) == 2 and c.top_logprobs[0].logprob >= c.top_logprobs[1].logprob
                assert bytes(c.bytes) == c.token.encode()
            stream = client.chat.completions.create(model="m", messages=msgs, max_tokens=4, temperature=0,
                                                    logprobs=True, top_logprobs=2, stream=True)
            streamed = [e.logprob for ch in stream for c in ch.choices if c.logprobs for e in c.logprobs.content]
            assert len(streamed) == len(content)
            # The second request takes its prompt from the prefix cache (fp16 rows, not the
            # first run's fp32 activations): equal to about 1e-4.
            assert all(abs(a - b.logprob) < 1e-3 for a, b in zip(streamed, content)), (streamed, content)
            r = client.chat.completions.create(model="m", messages=msgs, max_tokens=2)
            assert r.choices[0].logprobs is None

        def tokenize_roundtrip():
            s, t = post("/tokenize", {"content": "Hello world", "add_special": False, "with_pieces": True})
            assert s == 200 and t["count"] == len(t["tokens"]) and "".join(t["pieces"]) == "Hello world", t
            assert t["max_model_len"] == 512
            s, d = post("/detokenize", {"tokens": t["tokens"]})
            assert s == 200 and d["prompt"] == "Hello world" and d["content"] == "Hello world", d
            s, with_bos = post("/tokenize", {"prompt": "Hello world"})
            assert with_bos["tokens"][1:] == t["tokens"] or with_bos["tokens"] == t["tokens"]
            for path, body, field in [("/tokenize", {"prompt": 5}, "prompt"),
                                      ("/detokenize", {"tokens": [1, -1]}, "tokens"),
                                      ("/detokenize", {"tokens": [10 ** 12]}, "tokens"),
                                      ("/detokenize", {"tokens": "x"}, "tokens")]:
                s, e = post(path, body)
                assert s == 400 and e["error"]["param"] == field, (path, body, s, e)
            s, _, _ = request(url + "/tokenize", "POST", b"not json")
            assert s == 400, s

        def penalties_and_format():
            base = {"model": "m", "prompt": "a a a a a a a a", "max_tokens": 8, "temperature": 0}
            s, plain = post("/v1/completions", base)
            s2, pen = post("/v1/completions", dict(base, frequency_penalty=2.0, presence_penalty=2.0))
            assert s == 200 and s2 == 200, (plain, pen)
            # Every generated repeat costs 2 + 2 x count in logit: the text must change.
            assert plain["choices"][0]["text"] != pen["choices"][0]["text"], (plain, pen)
            s, _ = post("/v1/completions", dict(base, repetition_penalty=1.3))
            assert s == 200
            for field, value in [("frequency_penalty", 3), ("presence_penalty", -2.5), ("logprobs", 21),
                                 ("logprobs", -1), ("echo", "yes")]:
                s, e = post("/v1/completions", dict(base, **{field: value}))
                assert s == 400 and e["error"]["param"] == field, (field, value, s, e)
            chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
            s, e = post("/v1/chat/completions", dict(chat, top_logprobs=2))
            assert s == 400 and e["error"]["param"] == "top_logprobs", e
            s, e = post("/v1/chat/completions", dict(chat, response_format={"type": "json_schema"}))
            assert s == 400 and "json_schema" in e["error"]["message"], e
            s, e = post("/v1/chat/completions", dict(chat, response_format={"type": "yaml"}))
            assert s == 400 and e["error"]["param"] == "response_format", e

        def json_object():
            fmt = {"type": "json_object"}
            msgs = [{"role": "user", "content": "Describe a cat as a JSON object with keys name, age and colors."}]
            stopped = 0
            for temperature, seed in [(0, 0), (0.8, 1), (1.0, 2)]:
                r = client.chat.completions.create(model="m", messages=msgs, max_tokens=200, temperature=temperature,
                                                   seed=seed, response_format=fmt)
                c = r.choices[0]
                if c.finish_reason == "stop":
                    stopped += 1
                    assert isinstance(json.loads(c.message.content), dict), c.message.content
                else:  # cut by max_tokens: still the start of an object
                    assert c.finish_reason == "length" and c.message.content.lstrip().startswith("{"), c
                stream = client.chat.completions.create(model="m", messages=msgs, max_tokens=200,
                                                        temperature=temperature, seed=seed, response_format=fmt,
                                                        stream=True)
                text, finish = "", None
                for ch in stream:
                    for sc in ch.choices:
                        text += sc.delta.content or ""
                        finish = sc.finish_reason or finish
                assert finish == c.finish_reason and text == c.message.content, (text, c)
            assert stopped >= 1, "no json_object answer finished within 200 tokens"
            r = client.completions.create(model="m", prompt='A user profile in JSON: ', max_tokens=120,
                                          temperature=0, logprobs=1, extra_body={"response_format": fmt})
            c = r.choices[0]
            if c.finish_reason == "stop":
                assert isinstance(json.loads(c.text), dict), c.text
            assert len(c.logprobs.token_logprobs) == r.usage.completion_tokens

        checks.run("PPL from echo + logprobs over the API equals slimkv ppl", perplexity)
        checks.run("echo without logprobs", echo_text)
        checks.run("completions logprobs", completion_logprobs)
        checks.run("chat logprobs, whole and streamed", chat_logprobs)
        checks.run("/tokenize and /detokenize", tokenize_roundtrip)
        checks.run("penalties, bad values, response_format", penalties_and_format)
        checks.run("response_format json_object", json_object)
    checks.finish()


if __name__ == "__main__":
    main()

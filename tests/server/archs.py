"""`slimkv serve` on every architecture: a tiny random-weight GGUF of each (written by
tools/oracle/make_model.py), served with a quantized KV preset and an eviction policy, answers
a chat completion through the model's own chat template and a streamed completion.

The text of a random model means nothing; what is checked is that each request completes
through the template, the quantized cache and the policy, with the usage the server reports,
and that /metrics counts the policy's evictions once a completion runs past its budget.
"""
import os
import subprocess
import sys
import tempfile

import openai

import serve_util
from serve_util import Checks, Server, metrics, wait_for

ARCHS = ["llama3", "llama-yarn", "qwen2", "qwen3", "mistral", "phi3"]


def main():
    checks = Checks()
    with tempfile.TemporaryDirectory() as tmp:
        for arch in ARCHS:
            path = os.path.join(tmp, f"{arch}.gguf")
            subprocess.run([sys.executable, os.path.join(serve_util.SRC, "tools/oracle/make_model.py"), arch, path],
                           check=True, capture_output=True)
            serve_util.MODEL = path

            def serve_arch():
                with Server("-c", "256", "--kv", "int4", "--kv-policy", "sinks", "--kv-budget", "64") as srv:
                    c = openai.OpenAI(base_url=srv.url + "/v1", api_key="none", max_retries=0, timeout=120)
                    r = c.chat.completions.create(model="any", messages=[
                        {"role": "system", "content": "Be brief."},
                        {"role": "user", "content": "What is the capital of France?"}], max_tokens=24, temperature=0)
                    assert r.choices[0].message.role == "assistant"
                    assert r.choices[0].finish_reason in ("stop", "length"), r
                    assert r.usage.prompt_tokens > 5 and r.usage.completion_tokens > 0, r.usage
                    text, finish = "", None
                    for chunk in c.completions.create(model="any", prompt="The quick brown fox", max_tokens=160,
                                                      temperature=0, stream=True):
                        if chunk.choices:
                            text += chunk.choices[0].text or ""
                            finish = chunk.choices[0].finish_reason or finish
                    assert finish in ("stop", "length"), finish
                    # /metrics says what the policy did: 160 tokens pass the budget (64) and the block it may run over.
                    assert "slimkv_kv_evicted_tokens_total" in metrics(srv.url)
                    if finish == "length":
                        wait_for(lambda: metrics(srv.url)["slimkv_kv_evicted_tokens_total"] > 0, timeout=10,
                                 what="evicted tokens in /metrics")
                    srv.terminate()

            checks.run(f"serve {arch} (int4 KV, sinks)", serve_arch)
    checks.finish()


if __name__ == "__main__":
    main()

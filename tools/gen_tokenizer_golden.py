#!/usr/bin/env python3
"""Generate the tokenizer golden files from llama.cpp, an independent implementation.

    .venv/bin/python tools/gen_tokenizer_golden.py \
        --llama-tokenize /opt/peer/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin/llama-tokenize

writes, for each model present under models/ (tools/fetch_models.py --all fetches both):
  tests/data/tokenizer/smollm2.json, tests/data/tokenizer/gemma3.json
      test cases: input bytes (base64, so invalid UTF-8 survives), add_bos, parse_special and
      the ids llama-tokenize gives, or "llama_cpp_error" where llama-tokenize fails;
      plus the token count and an FNV-1a hash of the ids of the whole eval text
      (data/pg_essays.txt), which is too large to store;
  tests/data/tokenizer/chat_templates.json
      conversations rendered by the model's Jinja chat template (Jinja2, configured as
      Hugging Face's apply_chat_template), and llama-tokenize's ids of each rendering.

llama.cpp is not part of this repository: only its outputs are committed. Each case runs
`llama-tokenize -m MODEL -f FILE --no-escape --ids --log-disable [--no-bos]
[--no-parse-special]` (about 0.2 s per call for SmolLM2, 0.8 s for Gemma-3's 262k vocabulary;
the whole run takes a few minutes).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT_DIR = REPO / "tests" / "data" / "tokenizer"

MODELS = {
    "smollm2": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "gemma3": "gemma-3-270m-q4_k_m.gguf",
}

FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3


def fnv1a_ids(ids: list[int]) -> str:
    """FNV-1a 64 over the ids as little-endian int32 (tests/tokenizer/golden.h mirrors it)."""
    h = FNV_OFFSET
    for i in ids:
        for b in int(i).to_bytes(4, "little", signed=True):
            h ^= b
            h = (h * FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def fnv1a_bytes(data: bytes) -> str:
    h = FNV_OFFSET
    for b in data:
        h ^= b
        h = (h * FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


# ---------------------------------------------------------------------------------------------
# Test inputs. Each is (name, bytes). Names are unique within a model's file.


def u(s: str) -> bytes:
    return s.encode("utf-8")


def common_cases() -> list[tuple[str, bytes]]:
    c: list[tuple[str, bytes]] = []
    add = lambda name, data: c.append((name, data if isinstance(data, bytes) else u(data)))

    add("empty", b"")
    add("single_space", " ")
    add("single_letter", "a")
    add("hello_world", "Hello world")
    add("hello_world_leading_space", " Hello world")
    # English prose
    add("prose_1", "The quick brown fox jumps over the lazy dog.")
    add("prose_2", "It was the best of times, it was the worst of times, it was the age of "
        "wisdom, it was the age of foolishness...")
    add("prose_3", "Dr. Smith's office (room 4B) opens at 9:30 a.m.; bring your ID, e-mail "
        "address & a pen!")
    add("prose_contractions", "I don't know what you'd've done, but we'll see. They're sure it's fine; "
        "I'm not. You've got it.")
    add("contractions_upper", "DON'T YOU'LL WE'VE SHE'S I'M THEY'RE HE'D 'S 'T")
    add("curly_quotes", "\u201cQuoted,\u201d she said \u2014 \u2018don\u2019t\u2019 \u2026 okay\u2026")
    add("punctuation_runs", "Wait!!! Really??? Yes... No!? (a) [b] {c} <d> \"e\" 'f' --- ___ ***")
    add("markdown", "# Title\n\n* item one\n* item **two**\n\n> quote\n\n[link](https://example.com/a?b=c&d=e)")
    # Code
    add("code_python", "def fib(n: int) -> int:\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"
        "    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n")
    add("code_cpp", "#include <vector>\n\ntemplate <typename T>\nT Sum(const std::vector<T>& v) {\n"
        "  T s{};\n  for (const auto& x : v) s += x;  // accumulate\n  return s;\n}\n")
    add("code_json", '{"name": "slimkv", "version": [0, 1, 0], "ok": true, "ratio": 0.25, "none": null}')
    add("code_html", "<!DOCTYPE html><html><body><h1 class=\"t\">Hi</h1><p>a&amp;b &lt;c&gt;</p></body></html>")
    add("code_shell", "for f in *.gguf; do\n\techo \"$f\" | sed -e 's/a/b/g' >> out.txt 2>&1\ndone")
    add("code_tabs_indent", "\tif (x) {\n\t\treturn y;\n\t}\n")
    add("code_regex", r"^(?:[a-z0-9!#$%&'*+/=?^_`{|}~-]+)@(?:\w+\.)+\w{2,}$")
    add("url", "https://www.example.com/path/to/page.html?query=value&other=123#fragment")
    add("email_mention_hashtag", "Contact me@example.org or @someone_else about #KVcache2025!")
    # Numbers
    add("numbers_long", "12345678901234567890")
    add("numbers_mixed", "3.14159 2,718 1,000,000 0x1F 1e-9 -42 +7 50% $19.99 10:45 2025-11-24")
    add("numbers_phone", "+1 (555) 123-4567 ext. 89")
    add("numbers_words", "abc123def 4five6 7.8.9 v1.2.3-rc4")
    add("numbers_unicode", "\u0663\u0664\u0665 \u0967\u0968\u0969 \uff11\uff12\uff13 \u00bd \u2153 \u216b \u2460\u2461 \u00b2\u00b3")
    # Whitespace
    add("ws_spaces_3", "   ")
    add("ws_tabs", "\t\t")
    add("ws_newlines_3", "\n\n\n")
    add("ws_space_newline_space", " \n ")
    add("ws_double_space_words", "a  b   c    d")
    add("ws_trailing", "end with spaces   ")
    add("ws_leading", "    leading spaces")
    add("ws_mixed_run", "a \t \n  \n\t b")
    add("ws_crlf", "line one\r\nline two\r\n\r\nline four")
    add("ws_cr_only", "a\rb\r\rc")
    add("ws_vertical_tab_formfeed", "a\x0bb\x0cc")
    add("ws_nbsp", "a\u00a0b \u00a0 c")
    add("ws_unicode_spaces", "a\u2009b\u3000c\u2028d\u2029e\u0085f\u1680g\u202fh\u205fi")
    add("ws_mongolian_vowel_separator", "a\u180eb \u180e c")  # \s in PCRE2, not in llama.cpp
    add("ws_file_separators", "a\x1cb\x1dc\x1ed\x1fe")  # Python isspace, not llama.cpp
    add("ws_zero_width", "a\u200bb\u200cc\u200dd\ufeffe")
    add("ws_newline_runs", "p1\n\np2\n\n\n\np3\n\n\n\n\n\n\n\n\n\n\n\n\np4")
    # Unicode
    add("cjk_chinese", "\u6211\u4eec\u7684\u7f13\u5b58\u5f88\u5c0f\uff0c\u4f46\u662f\u5f88\u5feb\u3002\u4eca\u5929\u5929\u6c14\u600e\u4e48\u6837\uff1f")
    add("cjk_japanese", "\u3053\u3093\u306b\u3061\u306f\u3001\u4e16\u754c\uff01\u30ab\u30bf\u30ab\u30ca\u3068\u3072\u3089\u304c\u306a\u3068\u6f22\u5b57\u3002")
    add("cjk_korean", "\uc548\ub155\ud558\uc138\uc694 \uc138\uacc4! \ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8\uc785\ub2c8\ub2e4.")
    add("accents_composed", "Caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00fcber \u00e0 la fa\u00e7ade Se\u00f1or \u00c5ngstr\u00f6m")
    add("accents_decomposed", "Cafe\u0301 nai\u0308ve re\u0301sume\u0301 u\u0308ber")
    add("german_sharp_s", "Stra\u00dfe gro\u00df \u1e9e Fu\u00dfball")
    add("vietnamese", "Ti\u1ebfng Vi\u1ec7t c\u00f3 nhi\u1ec1u d\u1ea5u: \u1edf \u1ea1 \u1ec5 \u1eef")
    add("greek", "\u0391\u03b8\u03ae\u03bd\u03b1 \u03ba\u03b1\u03b9 \u03a3\u03c0\u03ac\u03c1\u03c4\u03b7: \u03bb\u03cc\u03b3\u03bf\u03c2")
    add("cyrillic", "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440! \u0401\u0436\u0438\u043a \u0438 \u0449\u0443\u043a\u0430.")
    add("arabic_rtl", "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645! \u0647\u0630\u0627 \u0646\u0635 \u0639\u0631\u0628\u064a\u0651.")
    add("hebrew_rtl", "\u05e9\u05b8\u05c1\u05dc\u05d5\u05b9\u05dd \u05e2\u05d5\u05b9\u05dc\u05b8\u05dd, \u05d6\u05d4 \u05d8\u05e7\u05e1\u05d8.")
    add("mixed_bidi", "English \u05e2\u05d1\u05e8\u05d9\u05ea \u0627\u0644\u0639\u0631\u0628\u064a\u0629 123 \u200fRLM\u200e LRM \u202eoverride\u202c")
    add("hindi", "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e! \u0915\u094d\u0937\u0924\u094d\u0930\u093f\u092f")
    add("thai", "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35\u0e0a\u0e32\u0e27\u0e42\u0e25\u0e01 \u0e20\u0e32\u0e29\u0e32\u0e44\u0e17\u0e22")
    add("math_symbols", "\u2200x \u2208 \u211d: \u2211 \u222b\u221a(x\u00b2) \u2264 \u221e \u2260 \u2248 \u00b1 \u00d7 \u00f7 \u2192 \u21d2")
    add("currency", "$5 \u20ac10 \u00a320 \u00a5300 \u20b9400 \u20bf0.1 \u00a2")
    add("box_drawing", "\u250c\u2500\u2510\n\u2502x\u2502\n\u2514\u2500\u2518")
    add("rare_cjk_ext_b", "\U00020000\U0002a6d6\U00020bb7")
    add("private_use", "\ue000\uf8ff\U000f0000")
    add("noncharacters", "\ufffe\uffff\ufdd0")
    add("replacement_char", "\ufffd bad \ufffd")
    # Assigned in Unicode 15.0/15.1 (llama.cpp's tables), not in PCRE2 10.42's Unicode 14.
    add("unicode15_letters_numbers", "a\U00031350b \U00011F04x \U0001E4F0\U0001E4F1 9\U00011F43\U0002EBF0")
    add("nul_and_controls", "a\x00b\x01c\x7fd\x1be[0m")
    # Emoji
    add("emoji_simple", "I love it \U0001F600\U0001F44D\U0001F389")
    add("emoji_skin_tone", "\U0001F44B\U0001F3FD \U0001F44D\U0001F3FF")
    add("emoji_zwj_family", "\U0001F468\u200d\U0001F469\u200d\U0001F467\u200d\U0001F466 family")
    add("emoji_zwj_professions", "\U0001F469\u200d\U0001F4BB \U0001F9D1\u200d\U0001F680 \U0001F3F3\ufe0f\u200d\U0001F308")
    add("emoji_flags", "\U0001F1FA\U0001F1F8 \U0001F1EF\U0001F1F5 \U0001F1E9\U0001F1EA \U0001F3F4\U000E0067\U000E0062\U000E0065\U000E006E\U000E0067\U000E007F")
    add("emoji_keycap_vs16", "1\ufe0f\u20e3 #\ufe0f\u20e3 \u2764\ufe0f \u263a\ufe0e")
    add("emoji_only_run", "\U0001F600\U0001F603\U0001F604\U0001F601\U0001F606\U0001F605\U0001F923\U0001F602")
    # Invalid UTF-8
    add("invalid_lone_continuation", b"\x80")
    add("invalid_ff", b"\xff")
    add("invalid_fe_in_word", b"ab\xfecd")
    add("invalid_truncated_2of3", b"x\xe4\xb8")
    add("invalid_truncated_2of3_then_ascii", b"\xe4\xb8abc")
    add("invalid_truncated_emoji", b"\xf0\x9f\x98 end")
    add("invalid_lead_then_ascii", b"a\xe4b")
    add("invalid_overlong_slash", b"\xc0\xaf")
    add("invalid_overlong_nul", b"x\xc0\x80y")
    add("invalid_overlong_3byte", b"\xe0\x80\xaf")
    add("invalid_surrogate", b"\xed\xa0\x80x")
    add("invalid_surrogate_pair", b"\xed\xa0\xbd\xed\xb8\x80")
    add("invalid_above_max", b"\xf4\x90\x80\x80")  # llama.cpp aborts on this (BPE)
    add("invalid_f5_lead", b"\xf5\x80\x80\x80z")
    add("invalid_5byte", b"\xf8\x88\x80\x80\x80")
    add("invalid_mixed", b"h\xc3\xa9llo \xffw\xf6rld \x80\x81\x82 ok")
    add("invalid_continuations_run", b"\x80\x80\x80\x80\x80\x80")
    add("invalid_latin1", "na\u00efve caf\u00e9 \u00fcber".encode("latin-1"))
    # Long inputs
    add("long_word_a", "a" * 5000)
    add("long_word_repeated", "supercalifragilistic" * 200)
    add("long_digits", "1234567890" * 300)
    add("long_emoji", "\U0001F600" * 500)
    add("long_cjk", "\u6f22\u5b57\u4e2d\u6587" * 500)
    add("long_spaces", " " * 3000 + "x")
    add("long_newlines", "\n" * 200)
    add("long_base64_blob", base64.b64encode(bytes(range(256)) * 8).decode())
    add("long_url_path", "https://example.com/" + "/".join(f"seg{i}" for i in range(300)))
    add("long_mixed_invalid", b"abc\xff" * 500)
    return c


SPECIAL_CASES = {
    "smollm2": [
        ("special_chat", "<|im_start|>user\nHi there!<|im_end|>\n<|im_start|>assistant\n"),
        ("special_endoftext", "Some text<|endoftext|>more text"),
        ("special_partial", "<|im_start <|im_end| <|im_start|"),
        ("special_adjacent", "<|im_start|><|im_end|><|im_start|>"),
        ("special_overlap", "<|im_start|>|>"),
        ("special_embedded_in_word", "abc<|im_end|>def"),
        ("special_repo_tokens", "<reponame>slimkv<file_sep>src/main.cc<filename>x<gh_stars>5"),
        ("special_jupyter", "<jupyter_start><jupyter_code>print(1)<jupyter_output>1<empty_output>"),
        ("special_with_spaces", " <|im_start|> user <|im_end|> "),
        ("special_lookalike", "<|im_start|\u200b> < |im_end|> <|IM_START|>"),
        ("special_invalid_inside", b"<|im_\xffstart|><|im_end|>\xff"),
        ("special_gemma_texts_in_smollm", "<start_of_turn>user\nhi<end_of_turn>"),
    ],
    "gemma3": [
        ("special_chat", "<start_of_turn>user\nHi there!<end_of_turn>\n<start_of_turn>model\n"),
        ("special_bos_eos_text", "<bos>Hello<eos> <pad> <unk> <mask>"),
        ("special_unused", "<unused0><unused99> <unused6241>"),
        ("special_user_defined_html", "<b>bold</b> <i>it</i> <table><tr><td>1</td></tr></table>"),
        ("special_strikethrough_s", "<s>old</s> new"),
        ("special_image_markers", "<start_of_image><end_of_image>[multimodal]"),
        ("special_partial", "<start_of_turn <end_of_turn> <start_of_tur"),
        ("special_adjacent", "<start_of_turn><end_of_turn><start_of_turn>"),
        ("special_embedded_in_word", "abc<end_of_turn>def"),
        ("special_with_spaces", " <start_of_turn> model <end_of_turn> "),
        ("special_newline_runs_user_defined", "a\nb\n\nc" + "\n" * 40 + "d\t\t\te" + " " * 10 + "f"),
        ("special_invalid_inside", b"<start_of_\xffturn><end_of_turn>\xff"),
        ("special_chatml_texts_in_gemma", "<|im_start|>user\nhi<|im_end|>"),
    ],
}


# Random strings over characters that stress the pre-tokenizer and merges, many per case:
# they are joined by a control token, which cuts the text into fragments that are tokenized
# independently, so one llama-tokenize call checks a few hundred strings.
RANDOM_ALPHABET = [
    "a", "b", "Z", "x", " ", "  ", "\t", "\n", "\r", "'", "'s", "'S", "'ll", "'VE", "0", "7", "42",
    "\u0661", "\u00bd", "\u2167", "!", "?", ".", ",", "-", "_", "(", "\"", "\u00a0", "\u3000",
    "\u2009", "\u180e", "\u0085", "\u2028", "\u000b", "\u001c", "\u00e9", "e\u0301", "\u00df",
    "\u6c49", "\u5b57", "\u30a2", "\ud55c", "\u0627", "\u05e9", "\u05b8", "\u0e01", "\u0e31",
    "\U0001F600", "\U0001F44D\U0001F3FD", "\u200d", "\ufe0f", "\U0001F1FA", "<", ">", "|", "/",
    "\\", "$", "%", "+", "=", "^", "~", "`", "\u0000", "\u007f", "\ufffd", "\U00031350",
    "\U0001E4F0", "\U00011F43", "\U00011F04", "\u2581", "\u0120",
]
RANDOM_INVALID = [b"\x80", b"\xff", b"\xe4", b"\xc3", b"\xe4\xb8", b"\xed\xa0\x80", b"\xc0\x80", b"\xf0\x9f"]
SEPARATORS = {"smollm2": b"<|endoftext|>", "gemma3": b"<end_of_turn>"}


def random_cases(key: str) -> list[tuple[str, bytes]]:
    import random
    rng = random.Random(20251124)
    sep = SEPARATORS[key]
    out = []
    for chunk in range(6):
        pieces = []
        for _ in range(250):
            n = rng.randint(1, 14)
            s = b""
            for _ in range(n):
                if chunk >= 4 and rng.random() < 0.15:
                    s += rng.choice(RANDOM_INVALID)
                else:
                    s += u(rng.choice(RANDOM_ALPHABET))
            pieces.append(s)
        out.append((f"random_mix_{chunk}", sep.join(pieces)))
    # Raw random bytes (no F4..F7 leads: llama.cpp aborts on code points above U+10FFFF).
    for chunk in range(2):
        pieces = [bytes(b for b in rng.randbytes(rng.randint(1, 24)) if not 0xF4 <= b <= 0xF7)
                  for _ in range(200)]
        out.append((f"random_bytes_{chunk}", sep.join(p for p in pieces if p)))
    return out


def eval_paragraph_cases(text: bytes) -> list[tuple[str, bytes]]:
    """Windows of 12 lines of the eval text (data/pg_essays.txt) at fixed line numbers."""
    lines = text.split(b"\n")
    out = []
    for start in [0, 700, 2100, 4000, 5555, 7000, 8200, 9500]:
        chunk = b"\n".join(lines[start:start + 12])
        if chunk:
            out.append((f"pg_essays_lines_{start}", chunk))
    return out


# ---------------------------------------------------------------------------------------------
# llama.cpp


def run_llama_tokenize(exe: str, model: Path, data: bytes, add_bos: bool, parse_special: bool) -> tuple[list[int] | None, str]:
    with tempfile.NamedTemporaryFile(prefix="tok_", suffix=".bin", delete=False) as f:
        f.write(data)
        path = f.name
    try:
        cmd = [exe, "-m", str(model), "-f", path, "--no-escape", "--ids", "--log-disable"]
        if not add_bos:
            cmd.append("--no-bos")
        if not parse_special:
            cmd.append("--no-parse-special")
        p = subprocess.run(cmd, capture_output=True)
        if p.returncode != 0:
            err = (p.stderr.decode("utf-8", "replace").strip().splitlines() or ["?"])[-1]
            return None, f"llama-tokenize exit {p.returncode}: {err}"
        line = p.stdout.decode().strip().splitlines()[-1]
        return json.loads(line), ""
    finally:
        os.unlink(path)


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def model_add_bos(exe: str, model: Path) -> bool:
    with_bos, _ = run_llama_tokenize(exe, model, b"a", True, True)
    no_bos, _ = run_llama_tokenize(exe, model, b"a", False, True)
    return len(with_bos) != len(no_bos)


def gen_model(exe: str, key: str, model: Path, eval_text: bytes | None) -> dict:
    add_bos_default = model_add_bos(exe, model)
    cases = common_cases() + [(n, d if isinstance(d, bytes) else u(d)) for n, d in SPECIAL_CASES[key]]
    cases += random_cases(key)
    if eval_text is not None:
        cases += eval_paragraph_cases(eval_text)
    names = [n for n, _ in cases]
    assert len(names) == len(set(names)), "duplicate case names"
    runs = []
    for name, data in cases:
        modes = [(add_bos_default, True)]
        if b"<" in data or b"[" in data:
            modes.append((add_bos_default, False))
        if add_bos_default and name in ("empty", "hello_world", "special_chat", "ws_newlines_3",
                                        "invalid_ff", "prose_1"):
            modes.append((False, True))
        for add_bos, ps in modes:
            runs.append((name, data, add_bos, ps))
    out_cases = []
    for i, (name, data, add_bos, ps) in enumerate(runs):
        if i % 20 == 0:
            progress(f"  {key}: {i}/{len(runs)}")
        ids, err = run_llama_tokenize(exe, model, data, add_bos, ps)
        entry = {"name": name, "input_b64": base64.b64encode(data).decode(), "add_bos": add_bos,
                 "parse_special": ps}
        if ids is None:
            entry["llama_cpp_error"] = err
        else:
            entry["ids"] = ids
        out_cases.append(entry)
    result = {
        "model": model.name,
        "add_bos_default": add_bos_default,
        "cases": out_cases,
    }
    if eval_text is not None:
        ids, err = run_llama_tokenize(exe, model, eval_text, add_bos_default, True)
        assert ids is not None, err
        result["eval_text"] = {
            "file": "data/pg_essays.txt",
            "bytes": len(eval_text),
            "fnv1a_bytes": fnv1a_bytes(eval_text),
            "add_bos": add_bos_default,
            "parse_special": True,
            "num_ids": len(ids),
            "fnv1a_ids": fnv1a_ids(ids),
        }
    return result


# ---------------------------------------------------------------------------------------------
# Chat templates


CONVERSATIONS = [
    ("user_only", [{"role": "user", "content": "Hello!"}], True),
    ("user_only_no_generation_prompt", [{"role": "user", "content": "Hello!"}], False),
    ("system_user", [{"role": "system", "content": "You are terse."},
                     {"role": "user", "content": "What is 2+2?"}], True),
    ("multi_turn", [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
                    {"role": "user", "content": "Tell me a joke."}], True),
    ("system_multi_turn", [{"role": "system", "content": "Answer in French."},
                           {"role": "user", "content": "Good morning"},
                           {"role": "assistant", "content": "Bonjour"},
                           {"role": "user", "content": "Thanks"}], True),
    ("whitespace_content", [{"role": "system", "content": "  Be nice.  \n"},
                            {"role": "user", "content": "\n  Spaces around  \n\n"}], True),
    ("unicode_content", [{"role": "user", "content": "\u00bfQu\u00e9 tal? \u4f60\u597d \U0001F44B\U0001F3FD"}], True),
    ("multiline_content", [{"role": "user", "content": "line 1\nline 2\n\n```py\nprint('x')\n```"}], True),
    ("system_only", [{"role": "system", "content": "Only a system message."}], True),
]
SMOLLM2_ONLY = [
    ("assistant_first", [{"role": "assistant", "content": "I start."}, {"role": "user", "content": "ok"}], True),
]


def render_jinja(template: str, messages: list, add_generation_prompt: bool, bos: str, eos: str) -> str:
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(msg):
        raise jinja2.exceptions.TemplateError(msg)

    # As transformers' apply_chat_template configures Jinja.
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                            bos_token=bos, eos_token=eos)


def gguf_chat_template(model: Path) -> str:
    import gguf
    r = gguf.GGUFReader(str(model))
    f = r.fields.get("tokenizer.chat_template")
    return bytes(f.parts[f.data[0]]).decode("utf-8") if f else ""


def gen_chat(exe: str, models_dir: Path) -> dict:
    out = {"note": "rendered = the model's Jinja template (Jinja2 as in transformers), with a "
                   "leading BOS text removed; ids = llama-tokenize of rendered (parse_special, "
                   "model's add_bos).", "models": {}}
    for key, file in MODELS.items():
        model = models_dir / file
        if not model.exists():
            continue
        if key == "smollm2":
            template, source, bos, eos = gguf_chat_template(model), "gguf", "<|im_start|>", "<|im_end|>"
            convs = CONVERSATIONS + SMOLLM2_ONLY
        else:
            source = "tests/data/tokenizer/gemma3_chat_template.jinja"
            template, bos, eos = (REPO / source).read_text(), "<bos>", "<eos>"
            convs = CONVERSATIONS
        add_bos = model_add_bos(exe, model)
        entries = []
        for name, messages, gen in convs:
            rendered = render_jinja(template, messages, gen, bos, eos)
            if key == "gemma3":
                assert rendered.startswith(bos)
                rendered = rendered[len(bos):]
            ids, err = run_llama_tokenize(exe, model, u(rendered), add_bos, True)
            assert ids is not None, err
            entries.append({"name": name, "messages": messages, "add_generation_prompt": gen,
                            "rendered": rendered, "ids": ids})
        out["models"][key] = {"model": file, "template_source": source, "conversations": entries}
    return out


def write_json(path: Path, data: dict, list_key: str) -> None:
    """JSON with one entry of data[list_key] per line (readable diffs, compact files)."""
    head = {k: v for k, v in data.items() if k != list_key}
    lines = [json.dumps(e, ensure_ascii=True) for e in data[list_key]]
    text = json.dumps(head, indent=1, ensure_ascii=True)[:-2]
    text += f',\n "{list_key}": [\n  ' + ",\n  ".join(lines) + "\n ]\n}\n"
    json.loads(text)  # well-formed
    path.write_text(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--llama-tokenize", required=True, help="path of llama.cpp's llama-tokenize")
    ap.add_argument("--models-dir", type=Path, default=REPO / "models")
    ap.add_argument("--eval-text", type=Path, default=REPO / "data" / "pg_essays.txt")
    ap.add_argument("--out-dir", type=Path, default=OUT_DIR)
    ap.add_argument("--only", choices=sorted(MODELS) + ["chat"], action="append")
    args = ap.parse_args()
    if not os.access(args.llama_tokenize, os.X_OK):
        print(f"gen_tokenizer_golden: {args.llama_tokenize} is not an executable", file=sys.stderr)
        return 1
    eval_text = args.eval_text.read_bytes() if args.eval_text.exists() else None
    args.out_dir.mkdir(parents=True, exist_ok=True)
    wanted = args.only or (sorted(MODELS) + ["chat"])
    for key, file in MODELS.items():
        if key not in wanted:
            continue
        model = args.models_dir / file
        if not model.exists():
            print(f"gen_tokenizer_golden: {model} is missing; run tools/fetch_models.py --all", file=sys.stderr)
            return 1
        progress(f"== {key} ({file})")
        data = gen_model(args.llama_tokenize, key, model, eval_text)
        path = args.out_dir / f"{key}.json"
        write_json(path, data, "cases")
        progress(f"  wrote {path} ({len(data['cases'])} cases)")
    if "chat" in wanted:
        progress("== chat templates")
        data = gen_chat(args.llama_tokenize, args.models_dir)
        path = args.out_dir / "chat_templates.json"
        path.write_text(json.dumps(data, indent=1, ensure_ascii=True) + "\n")
        progress(f"  wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

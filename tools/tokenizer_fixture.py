#!/usr/bin/env python3
"""tokenizer_fixture.py — builds the reference HF `tokenizers` tokenizer for SmolLM2 from the GGUF
and writes the committed fixture of expected ids that engine/tokenizer/bpe_test checks against.

transformers' own GGUF path needs torch and, for tokenizer.ggml.pre = "smollm", builds a plain
GPT-2 ByteLevel pre-tokenizer without the digit split, so the tokenizer is assembled here the way
SmolLM2's tokenizer.json is: BPE (no unk, no byte fallback) + Sequence[Digits(individual_digits),
ByteLevel(add_prefix_space=False, use_regex=True)] + ByteLevel decoder, control tokens special.

    pip install tokenizers==0.23.3 gguf==0.19.0
    python3 tools/tokenizer_fixture.py [--model PATH] [--json OUT.json] [--fixture OUT.tsv]

Fixture format, one sample per line: parse_special <TAB> escaped text <TAB> space-separated ids.
Escapes: \\\\ \\t \\n \\r and \\xHH for other control bytes; everything else is raw UTF-8.
"""
import argparse
import os
import random

from gguf import GGUFReader
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

CACHE = os.path.expanduser("~/.cache/decoserve")
CORPORA = "/work/shared/corpora"

EDGE_CASES = [
    "12345",
    "a 12345 b",
    "3.14159 and 1,000,000 and 2024-01-01",
    "x1y22z333",
    "I'm sure they'll say it's fine, don't you think? We've seen it. I'd go.",
    "DON'T SHOUT, IT'S LOUD; We'Re 'tis 'S",
    "multiple   internal    spaces",
    "  leading and trailing spaces  ",
    "tabs\tand\nnewlines\r\nmixed\n\n\nend",
    "\t\t indented\n    code\n",
    "def foo(x):\n    return x ** 2  # comment\n",
    "Emoji: 😀👍🏽🇺🇸 and ❤️ done",
    "🤗",
    "Café naïve résumé façade Ångström",
    "e\u0301 combining acute",
    "你好，世界！这是一个测试。",
    "日本語のテキストとカタカナ ー",
    "한국어 텍스트입니다",
    "Россия и Українa",
    "مرحبا بالعالم",
    "Ω≈ç√∫˜µ≤≥÷ ¡™£¢∞§¶•ªº–≠",
    "nbsp\u00a0here and\u2009thin\u3000ideographic",
    "<|im_start|>user\nhi<|im_end|>",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|><|endoftext|>text<|im_end|>",
    "<|im_start<|im_end|>|>",
    "<repo_name>decoserve<file_sep>bpe.c",
    "",
    " ",
    "\n",
    "   ",
    "a",
    "!!!??? ... --- (parens) [brackets] {braces}",
    "http://example.com/path?q=1&r=2#frag",
    "ctrl\x04and\x06bytes\x13",
    "4-byte plane 1: \U0001D11E, plane 4: \U00040000\U00040001 end",
    "ABC123def456",
    "ⅫⅦ ½ ² superscripts and roman numerals",
    "'s's's",
    "   \n   \n",
    "a\u2028b\u2029c\u0085d",
]

# Samples checked with special-token parsing off: the markup must be tokenized as plain text.
PLAIN_CASES = [
    "<|im_start|>user\nhi<|im_end|>",
    "<|endoftext|> and <filename>",
    "plain text 42",
]


def build_tokenizer(model_path):
    reader = GGUFReader(model_path)

    def field(name):
        return reader.fields[name].contents()

    assert field("tokenizer.ggml.model") == "gpt2", field("tokenizer.ggml.model")
    assert field("tokenizer.ggml.pre") == "smollm", field("tokenizer.ggml.pre")
    tokens = field("tokenizer.ggml.tokens")
    types = field("tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ")) for m in field("tokenizer.ggml.merges")]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    bpe = models.BPE(vocab=vocab, merges=merges, unk_token=None, fuse_unk=False,
                     byte_fallback=False, ignore_merges=False)
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    specials = [AddedToken(t, special=True, normalized=False)
                for t, ty in zip(tokens, types) if ty == 3]
    users = [AddedToken(t, special=False, normalized=False)
             for t, ty in zip(tokens, types) if ty == 4]
    tok.add_special_tokens(specials)
    if users:
        tok.add_tokens(users)
    assert tok.get_vocab_size() == len(tokens)
    return tok


def corpus_samples(rng):
    samples = []
    with open(os.path.join(CORPORA, "brown.txt"), encoding="utf-8") as f:
        brown = [line.rstrip("\n") for line in f if line.strip()]
    samples += rng.sample(brown, 70)
    austen_dir = os.path.join(CORPORA, "janeausten")
    for name in sorted(os.listdir(austen_dir)):
        with open(os.path.join(austen_dir, name), encoding="utf-8") as f:
            text = f.read()
        lines = [line for line in text.split("\n") if line.strip()]
        samples += rng.sample(lines, 12)
        for _ in range(3):  # multi-line chunks keep paragraph breaks and indentation
            start = rng.randrange(0, len(text) - 2000)
            samples.append(text[start:start + rng.randrange(200, 1500)])
    return samples


def escape(text):
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append("\\x%02x" % ord(ch))
        else:
            out.append(ch)
    return "".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=os.path.join(CACHE, "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--json", default=os.path.join(CACHE, "smollm2-tokenizer.json"))
    ap.add_argument("--fixture", default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures",
        "tokenizer_smollm2.tsv"))
    args = ap.parse_args()

    tok = build_tokenizer(args.model)
    tok.save(args.json)
    rng = random.Random(20240601)
    rows = [(1, t) for t in EDGE_CASES + corpus_samples(rng)] + [(0, t) for t in PLAIN_CASES]
    with open(args.fixture, "w", encoding="utf-8", newline="\n") as f:
        for parse_special, text in rows:
            tok.encode_special_tokens = not parse_special
            ids = tok.encode(text, add_special_tokens=False).ids
            f.write("%d\t%s\t%s\n" % (parse_special, escape(text), " ".join(map(str, ids))))
    print("wrote %d samples to %s and the tokenizer to %s" % (len(rows), args.fixture, args.json))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Writes the fuzzers' seed corpora under fuzz/corpus/ (standard library only, deterministic):
a complete tiny Llama GGUF with its tokenizer and a GGUF with one value of every metadata type;
a small safetensors file and config.json for the HF fuzzer (first byte 0 / 1 picks which);
a tokenizer.json; and GenerateRequest / TokenizeRequest / HealthCheckRequest bytes (first byte
0 / 1 / 2 picks the method). Each seed is valid, so the fuzzer starts deep inside the parser.

    python3 fuzz/make_seeds.py
"""

import json
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")

# --- GGUF ---------------------------------------------------------------------------------------

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
PACK = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f", BOOL: "<?",
        U64: "<Q", I64: "<q", F64: "<d"}


def gstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def gvalue(kind, v):
    if kind == STR:
        return gstr(v)
    if kind == ARR:
        elem, items = v
        out = struct.pack("<IQ", elem, len(items))
        return out + b"".join(gvalue(elem, x) for x in items)
    return struct.pack(PACK[kind], v)


def gguf(kvs, tensors):
    """kvs: [(key, type, value)]; tensors: [(name, [ne...], float values)] stored as F32."""
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs))
    for key, kind, v in kvs:
        out += gstr(key) + struct.pack("<I", kind) + gvalue(kind, v)
    offset, blobs = 0, []
    for name, ne, values in tensors:
        out += gstr(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", n) for n in ne)
        out += struct.pack("<IQ", 0, offset)
        blob = b"".join(struct.pack("<f", x) for x in values)
        blob += b"\0" * (-len(blob) % 32)
        blobs.append(blob)
        offset += len(blob)
    out += b"\0" * (-len(out) % 32)
    return out + b"".join(blobs)


def tiny_llama_gguf():
    d, n_heads, n_kv, head_dim, ff = 8, 2, 1, 4, 16
    tokens = ["<|im_start|>", "<|im_end|>", "H", "e", "l", "o", "\u0120", "He", "ll", "llo",
              "Hello", "1", "2"]
    merges = ["H e", "l l", "ll o", "He llo"]
    v = len(tokens)

    def w(n, seed):
        return [((i * 7919 + seed * 104729) % 97 - 48) / 480.0 for i in range(n)]

    kvs = [
        ("general.architecture", STR, "llama"),
        ("llama.context_length", U32, 64),
        ("llama.embedding_length", U32, d),
        ("llama.block_count", U32, 1),
        ("llama.feed_forward_length", U32, ff),
        ("llama.attention.head_count", U32, n_heads),
        ("llama.attention.head_count_kv", U32, n_kv),
        ("llama.rope.freq_base", F32, 10000.0),
        ("llama.attention.layer_norm_rms_epsilon", F32, 1e-5),
        ("tokenizer.ggml.model", STR, "gpt2"),
        ("tokenizer.ggml.pre", STR, "smollm"),
        ("tokenizer.ggml.tokens", ARR, (STR, tokens)),
        ("tokenizer.ggml.token_type", ARR, (I32, [3, 3] + [1] * (v - 2))),
        ("tokenizer.ggml.merges", ARR, (STR, merges)),
        ("tokenizer.ggml.bos_token_id", U32, 0),
        ("tokenizer.ggml.eos_token_id", U32, 1),
        ("tokenizer.ggml.add_bos_token", BOOL, False),
    ]
    q, kv = n_heads * head_dim, n_kv * head_dim
    tensors = [("token_embd.weight", [d, v], w(d * v, 1)),
               ("output_norm.weight", [d], [1.0] * d)]
    shapes = [("attn_norm", [d]), ("attn_q", [d, q]), ("attn_k", [d, kv]), ("attn_v", [d, kv]),
              ("attn_output", [q, d]), ("ffn_norm", [d]), ("ffn_gate", [d, ff]),
              ("ffn_up", [d, ff]), ("ffn_down", [ff, d])]
    for i, (part, ne) in enumerate(shapes):
        n = ne[0] * (ne[1] if len(ne) > 1 else 1)
        tensors.append(("blk.0.%s.weight" % part, ne, [1.0] * n if len(ne) == 1 else w(n, i + 2)))
    return gguf(kvs, tensors)


def every_type_gguf():
    kvs = [("u8", U8, 200), ("i8", I8, -5), ("u16", U16, 60000), ("i16", I16, -300),
           ("u32", U32, 4000000000), ("i32", I32, -7), ("f32", F32, 0.5), ("bool", BOOL, True),
           ("str", STR, "caf\u00e9"), ("u64", U64, 2 ** 40), ("i64", I64, -(2 ** 40)),
           ("f64", F64, 1e-300), ("floats", ARR, (F32, [1.0, 2.5, -3.0])),
           ("nested", ARR, (ARR, [(I32, [1, 2]), (STR, ["a", "bc"])])),
           ("general.alignment", U32, 64)]
    return gguf(kvs, [("t", [4, 2], [float(i) for i in range(8)])])


# --- safetensors, config.json, tokenizer.json ---------------------------------------------------


def safetensors():
    f32 = struct.pack("<4f", 1.0, -2.0, 0.5, 3.0)
    f16 = struct.pack("<2H", 0x3C00, 0xC000)
    bf16 = struct.pack("<3H", 0x3F80, 0x4000, 0xBF80)
    header = {"__metadata__": {"format": "pt"},
              "a.weight": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
              "b": {"dtype": "F16", "shape": [2], "data_offsets": [16, 20]},
              "c": {"dtype": "BF16", "shape": [3, 1], "data_offsets": [20, 26]},
              "s": {"dtype": "I64", "shape": [], "data_offsets": [26, 34]}}
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + f32 + f16 + bf16 + struct.pack("<q", 42)


TOKENIZER_JSON = {
    "version": "1.0", "normalizer": None,
    "added_tokens": [{"id": 0, "content": "<|im_start|>", "special": True},
                     {"id": 1, "content": "<|im_end|>", "special": True},
                     {"id": 11, "content": "<x y>", "special": False}],
    "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
         "use_regex": True}]},
    "decoder": {"type": "ByteLevel"},
    "model": {"type": "BPE", "unk_token": None, "byte_fallback": False,
              "vocab": {"<|im_start|>": 0, "<|im_end|>": 1, "a": 2, "b": 3, "\u0120": 4, "ab": 5,
                        "\u0120ab": 6, "1": 7, "2": 8, "12": 9, "w": 10},
              "merges": ["a b", ["\u0120", "ab"], "1 2"]},
}

# --- requests -----------------------------------------------------------------------------------


def varint(n):
    n &= (1 << 64) - 1
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def field(number, data):
    if isinstance(data, int):
        return varint(number << 3) + varint(data)
    if isinstance(data, float):
        return varint(number << 3 | 5) + struct.pack("<f", data)
    data = data.encode() if isinstance(data, str) else data
    return varint(number << 3 | 2) + varint(len(data)) + data


def requests():
    packed_ids = b"".join(varint(i) for i in [0, 2, 3, 7])
    return {
        "generate_prompt": b"\0" + field(1, "Hello <|im_start|>ab 12") + field(3, 4) +
        field(4, 0.7) + field(5, 5) + field(6, 0.9) + field(7, 11) + field(8, "ab") +
        field(8, "\u00e9") + field(9, 3) + field(10, 1) + field(11, "req-1"),
        "generate_ids": b"\0" + field(2, packed_ids) + field(3, 2) + field(4, 0.0),
        "generate_probe": b"\0" + bytes.fromhex("0a02486918025a01ff"),
        "tokenize": b"\1" + field(1, "Hello w\u00f6rld 12 \U0001F600"),
        "health": b"\2" + field(1, "decoserve.v1.Decoserve"),
    }


def openai_bodies():
    """First byte: bit 0 chat, bits 1.. the template (0 chatml, 1 llama3, 2 none)."""
    completion = {"model": "m", "prompt": "Hello", "max_tokens": 4, "temperature": 0.7,
                  "top_p": 0.9, "seed": 3, "stop": ["ab", "\u00e9"], "stream": True,
                  "stream_options": {"include_usage": True}, "top_k": 5, "ignore_eos": True}
    chat = {"messages": [{"role": "system", "content": "Be brief."},
                         {"role": "user", "content": "Hi \U0001F600"}], "max_tokens": 3}
    return {
        "completion": b"\0" + json.dumps(completion).encode(),
        "completion_ids": b"\0" + json.dumps({"prompt": [[1, 2, 3]], "max_tokens": 2}).encode(),
        "chat_chatml": b"\1" + json.dumps(chat).encode(),
        "chat_llama3": b"\3" + json.dumps(chat).encode(),
        "chat_none": b"\5" + json.dumps(chat).encode(),
        "bad_types": b"\0" + b'{"prompt": 7, "max_tokens": "x", "n": 2}',
    }


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


write("gguf", "tiny_llama.gguf", tiny_llama_gguf())
write("gguf", "every_type.gguf", every_type_gguf())
write("hf", "model.safetensors", b"\0" + safetensors())
config = os.path.join(os.path.dirname(ROOT), "..", "tests", "fixtures", "tiny_hf", "config.json")
with open(config, "rb") as f:
    write("hf", "config.json", b"\1" + f.read())
write("tokenizer_json", "tokenizer.json", json.dumps(TOKENIZER_JSON).encode())
for name, data in requests().items():
    write("request", name, data)
for name, data in openai_bodies().items():
    write("openai", name, data)

#!/usr/bin/env python3
"""tools/hf_fixture.py — writes the tiny random Llama checkpoint in Hugging Face layout that
engine/loader/safetensors_test checks against (tests/fixtures/tiny_hf/).

The file is written by the real `safetensors` library (pip install numpy safetensors; no torch)
and read back with it, and expected.txt holds float64 checksums of what that independent reader
returned, so the C reader is compared with another implementation rather than with itself.

Usage: python3 tools/hf_fixture.py [out_dir]   (default tests/fixtures/tiny_hf)
"""
import json
import os
import sys

import numpy as np
import safetensors

CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_act": "silu",
    "num_hidden_layers": 2,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 96,
    "max_position_embeddings": 256,
    "rms_norm_eps": 1e-05,
    "rope_theta": 500000.0,
    "rope_scaling": {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64,
    },
    "tie_word_embeddings": False,
    "attention_bias": False,
    "mlp_bias": False,
    "torch_dtype": "bfloat16",
}

NUMPY_NAME = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}


def to_bf16_bits(x):
    """float32 -> bf16 bit patterns, round to nearest even (what torch's .to(bfloat16) does)."""
    bits = np.ascontiguousarray(x, dtype="<f4").view("<u4").astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype("<u2")


def encode(x, dtype):
    """Raw little-endian bytes of x stored as dtype."""
    if dtype == "F32":
        return np.ascontiguousarray(x, dtype="<f4")
    if dtype == "F16":
        return np.ascontiguousarray(x, dtype="<f2")
    return to_bf16_bits(x)


def decode(data, dtype):
    """float64 values of raw little-endian bytes (independent of the C reader)."""
    if dtype == "F32":
        return np.frombuffer(data, dtype="<f4").astype(np.float64)
    if dtype == "F16":
        return np.frombuffer(data, dtype="<f2").astype(np.float64)
    if dtype == "BF16":
        u = np.frombuffer(data, dtype="<u2").astype(np.uint32) << 16
        return u.view(np.float32).astype(np.float64)
    raise ValueError(dtype)


def tensors(rng):
    c = CONFIG
    d, ff, v = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    hd = d // c["num_attention_heads"]
    q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd

    def mat(rows, cols):
        return rng.standard_normal((rows, cols)).astype(np.float32) * np.float32(0.5)

    def norm(n):
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    out = {
        "model.embed_tokens.weight": ("BF16", mat(v, d)),
        "model.norm.weight": ("F32", norm(d)),
        "lm_head.weight": ("F32", mat(v, d)),
    }
    for layer in range(c["num_hidden_layers"]):
        attn, mlp = ("BF16", "F16") if layer == 0 else ("F16", "BF16")
        p = f"model.layers.{layer}."
        out[p + "input_layernorm.weight"] = ("F32", norm(d))
        out[p + "post_attention_layernorm.weight"] = ("F32", norm(d))
        out[p + "self_attn.q_proj.weight"] = (attn, mat(q, d))
        out[p + "self_attn.k_proj.weight"] = (attn, mat(kv, d))
        out[p + "self_attn.v_proj.weight"] = (attn, mat(kv, d))
        out[p + "self_attn.o_proj.weight"] = (attn, mat(d, q))
        out[p + "mlp.gate_proj.weight"] = (mlp, mat(ff, d))
        out[p + "mlp.up_proj.weight"] = (mlp, mat(ff, d))
        out[p + "mlp.down_proj.weight"] = (mlp, mat(d, ff))
    # Edge values the converters must get right: fp16 subnormal, negative zero, large values.
    out["model.layers.1.self_attn.q_proj.weight"][1][0, :3] = [3.0e-6, -0.0, 60000.0]
    out["model.embed_tokens.weight"][1][0, :2] = [-0.0, 1.0e-30]
    return out


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/tiny_hf"
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(20240601)
    specs, keep = {}, []
    for name, (dtype, x) in tensors(rng).items():
        raw = encode(x, dtype)
        keep.append(raw)
        specs[name] = safetensors.TensorSpec(
            dtype=NUMPY_NAME[dtype], shape=list(x.shape), data_ptr=raw.ctypes.data,
            data_len=raw.nbytes)
    path = os.path.join(out_dir, "model.safetensors")
    safetensors.serialize_file(specs, path, metadata={"format": "pt"})
    os.chmod(path, 0o644)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=2)
        f.write("\n")

    # Read back with the library, not with our own encoder.
    with open(path, "rb") as f:
        entries = safetensors.deserialize(f.read())
    lines = ["# name dtype shape sum sum_of_squares index=value... (float64 after conversion)"]
    check = np.random.default_rng(7)
    for name, info in sorted(entries):
        vals = decode(bytes(info["data"]), info["dtype"])
        n = vals.size
        idx = sorted({0, 1, n // 2, n - 1, *check.integers(0, n, 3).tolist()})
        shape = "x".join(str(s) for s in info["shape"])
        picks = " ".join(f"{i}={float(vals[i])!r}" for i in idx)
        lines.append(f"{name} {info['dtype']} {shape} {float(vals.sum())!r} {float((vals * vals).sum())!r} "
                     f"{picks}")
    with open(os.path.join(out_dir, "expected.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {path} ({os.path.getsize(path)} bytes), {len(entries)} tensors")


if __name__ == "__main__":
    main()

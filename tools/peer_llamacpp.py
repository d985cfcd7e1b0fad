#!/usr/bin/env python3
"""Measures the peer engine, llama.cpp (through llama-cpp-python), on the model decoserve uses, so
decoserve can be compared against it on the same machine and the same text: prompt/decode speed and
sliding-window perplexity with f16, q8_0 and q4_0 KV caches.

    pip install llama-cpp-python numpy    # or from a folder of wheels: tools/bench_cpu.sh says how
    python3 tools/peer_llamacpp.py speed --model $(tools/fetch-model.sh) [--json out.json]
    python3 tools/peer_llamacpp.py ppl --model $(tools/fetch-model.sh) \
        --text /work/shared/corpora/janeausten/emma.txt --kv q8_0 [--json out.json]
    python3 tools/peer_llamacpp.py tokens --model M --text FILE [--max-tokens N]   # ids, count

Protocol shared with decoserve-eval (match it token for token):
  Text/tokens. The file is read as bytes and decoded as UTF-8 (errors="strict"), the WHOLE text is
    tokenized with llama.cpp's tokenizer (llama_tokenize, add_special/add_bos=False, parse_special=
    False: no BOS, special-token text is not parsed), and the first --max-tokens ids are kept
    (tokenizing the whole text, not a byte prefix, so the boundary token is the one the full text
    gives). N = number of ids kept.
  Perplexity (HF "perplexity of fixed-length models" recipe, token-level mean).
    prev_end = 0
    for begin in 0, stride, 2*stride, ...:
        end = min(begin + ctx, N)
        the window ids[begin:end] is evaluated from scratch: KV cache cleared, positions 0..end-begin-1
        scored = global positions t with max(prev_end, 1) <= t < end   (t = 0 is never scored)
        each scored t contributes nll_t = -log_softmax(logits at position t-1)[ids[t]], where the
            logits are llama.cpp's float32 logits for the window (logits_all), cast to float64 in
            numpy, log_softmax = x - max(x) - log(sum(exp(x - max(x))))
        prev_end = end; stop once end == N
    Each window is one llama_decode batch (n_batch = ctx, n_ubatch = min(512, ctx)).
    ppl = exp(sum of all nll_t / number of scored tokens). Every t in 1..N-1 is scored exactly once;
    the first window scores ctx-1 tokens, the others (end - prev_end) = stride tokens (the last one
    maybe fewer), each with at least ctx - stride tokens of context. Defaults: ctx 1024, stride 512.
  KV types. f16 is llama.cpp's default cache type; q8_0/q4_0 set type_k = type_v = that type.
    Flash attention: on by default for every KV type. That is llama.cpp's own default (its context
    default flash_attn_type = AUTO resolves to FLASH_ATTN_EXT on the CPU backend) and it is needed
    for a quantized V cache; llama-cpp-python's flash_attn=False default overrides it to DISABLED.
    --flash-attn off gives that (f16 only). So f16/q8_0/q4_0 differ only in the cache type.
  Speed. Prompt: the first --prompt-tokens ids of emma.txt, evaluated as one batch (n_batch =
    prompt length, n_ubatch = min(512, n_batch)) into an empty cache; tokens/s = prompt tokens / wall time of that eval.
    Decode: right after the prompt, greedy (argmax of the last logits, computed in numpy) for
    --gen-tokens steps, one token per llama_decode; tokens/s = gen tokens / wall time of the loop
    (the first generated token comes from the prompt's logits, so gen-tokens decode calls are
    timed; the context depth grows from prompt to prompt+gen). Median and best of --repeats runs;
    one untimed warm-up run per KV type first. Rows: f16, f16 with flash attention
    off (llama-cpp-python's default), q8_0, q4_0.
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

import numpy as np

try:
    import llama_cpp
    from llama_cpp import Llama
except ImportError:  # pragma: no cover - a tool, told in the usage above
    sys.exit("peer_llamacpp: needs llama-cpp-python (pip install llama-cpp-python)")

EMMA = "/work/shared/corpora/janeausten/emma.txt"
KV_TYPES = {"f16": llama_cpp.GGML_TYPE_F16, "q8_0": llama_cpp.GGML_TYPE_Q8_0,
            "q4_0": llama_cpp.GGML_TYPE_Q4_0}


def flash_for(kv, flash):
    if flash == "off" and kv != "f16":
        sys.exit(f"peer_llamacpp: a {kv} V cache needs flash attention")
    return flash == "on"


def load(model, kv, flash, n_ctx, n_batch, threads, logits_all):
    return Llama(model_path=model, n_ctx=n_ctx, n_batch=n_batch, n_ubatch=min(n_batch, 512),
                 n_threads=threads, n_threads_batch=threads, logits_all=logits_all,
                 type_k=KV_TYPES[kv], type_v=KV_TYPES[kv], flash_attn=flash_for(kv, flash),
                 n_gpu_layers=0, seed=0, verbose=False)


def tokenize_file(llm, path, max_tokens):
    with open(path, "rb") as f:
        text = f.read().decode("utf-8")
    ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
    return ids[:max_tokens] if max_tokens else ids


def last_logits(llm):
    ptr = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
    return np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),))


def clear(llm):
    llm._ctx.kv_cache_clear()
    llm.reset()


def speed_one(llm, prompt, gen):
    clear(llm)
    t0 = time.perf_counter()
    llm.eval(prompt)
    t1 = time.perf_counter()
    tok = int(np.argmax(last_logits(llm)))
    out = [tok]
    t2 = time.perf_counter()
    for _ in range(gen):
        llm.eval([tok])
        tok = int(np.argmax(last_logits(llm)))
        out.append(tok)
    t3 = time.perf_counter()
    return len(prompt) / (t1 - t0), gen / (t3 - t2), out


def cmd_speed(a):
    rows = []
    for kv, flash in a.configs:
        llm = load(a.model, kv, flash, a.prompt_tokens + a.gen_tokens + 8, a.prompt_tokens,
                   a.threads, False)
        prompt = tokenize_file(llm, a.text, a.prompt_tokens)
        if len(prompt) < a.prompt_tokens:
            sys.exit(f"peer_llamacpp: {a.text}: only {len(prompt)} tokens")
        speed_one(llm, prompt, min(a.gen_tokens, 16))  # warm-up, untimed
        pp, tg, outs = [], [], []
        for _ in range(a.repeats):
            p, g, out = speed_one(llm, prompt, a.gen_tokens)
            pp.append(p)
            tg.append(g)
            outs.append(out)
        rows.append({"kv": kv, "flash_attn": flash_for(kv, flash), "prompt_tokens": len(prompt),
                     "gen_tokens": a.gen_tokens, "threads": a.threads,
                     "pp_tok_s_median": statistics.median(pp), "pp_tok_s_best": max(pp),
                     "tg_tok_s_median": statistics.median(tg), "tg_tok_s_best": max(tg),
                     "pp_tok_s_all": pp, "tg_tok_s_all": tg,
                     "greedy_same_each_repeat": all(o == outs[0] for o in outs),
                     "greedy_first_ids": outs[0][:16]})
        del llm
    print(f"llama-cpp-python {llama_cpp.__version__}, threads {a.threads}, prompt "
          f"{a.prompt_tokens} tok, gen {a.gen_tokens} tok, {a.repeats} repeats (median / best)")
    print("| KV | flash_attn | prompt tok/s | decode tok/s |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['kv']} | {'on' if r['flash_attn'] else 'off'} | "
              f"{r['pp_tok_s_median']:.1f} / {r['pp_tok_s_best']:.1f} | "
              f"{r['tg_tok_s_median']:.1f} / {r['tg_tok_s_best']:.1f} |")
    return {"mode": "speed", "version": llama_cpp.__version__, "model": a.model, "rows": rows}


def log_softmax_at(logits_row, target):
    x = logits_row.astype(np.float64)
    m = x.max()
    return x[target] - m - math.log(np.exp(x - m).sum())


def cmd_ppl(a):
    if not 0 < a.stride <= a.ctx:
        sys.exit("peer_llamacpp: need 0 < --stride <= --ctx")
    llm = load(a.model, a.kv, a.flash_attn, a.ctx, a.ctx, a.threads, True)
    ids = tokenize_file(llm, a.text, a.max_tokens)
    n = len(ids)
    t_start = time.perf_counter()
    nll_sum, count, prev_end, windows, begin = 0.0, 0, 0, 0, 0
    while begin < n:
        end = min(begin + a.ctx, n)
        clear(llm)
        llm.eval(ids[begin:end])
        logits = llm.scores[: end - begin]  # float32 [window][n_vocab]
        for t in range(max(prev_end, 1), end):
            nll_sum -= log_softmax_at(logits[t - 1 - begin], ids[t])
            count += 1
        windows += 1
        prev_end = end
        if a.progress:
            print(f"  window {windows} end {end}/{n} ppl so far {math.exp(nll_sum / count):.4f} "
                  f"({time.perf_counter() - t_start:.0f}s)", file=sys.stderr, flush=True)
        if end == n:
            break
        begin += a.stride
    wall = time.perf_counter() - t_start
    assert count == n - 1
    ppl = math.exp(nll_sum / count)
    print(f"{os.path.basename(a.text)} tokens {n} ctx {a.ctx} stride {a.stride} kv {a.kv} "
          f"flash_attn {'on' if flash_for(a.kv, a.flash_attn) else 'off'}: windows {windows}, "
          f"scored {count}, mean nll {nll_sum / count:.6f}, ppl {ppl:.4f}, wall {wall:.1f}s")
    return {"mode": "ppl", "version": llama_cpp.__version__, "model": a.model, "text": a.text,
            "tokens": n, "ctx": a.ctx, "stride": a.stride, "kv": a.kv,
            "flash_attn": flash_for(a.kv, a.flash_attn), "windows": windows, "scored": count,
            "mean_nll": nll_sum / count, "ppl": ppl, "wall_s": wall, "first_ids": ids[:20]}


def cmd_tokens(a):
    llm = Llama(model_path=a.model, vocab_only=True, verbose=False)
    ids = tokenize_file(llm, a.text, a.max_tokens)
    print(f"{a.text}: {len(ids)} tokens; first 20: {ids[:20]}")
    return {"mode": "tokens", "text": a.text, "tokens": len(ids), "first_ids": ids[:20]}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model", required=True)
    common.add_argument("--threads", type=int, default=2)
    common.add_argument("--json", help="also write the results to this JSON file")
    s = sub.add_parser("speed", parents=[common])
    s.add_argument("--prompt-tokens", type=int, default=512)
    s.add_argument("--gen-tokens", type=int, default=128)
    s.add_argument("--repeats", type=int, default=3)
    s.add_argument("--text", default=EMMA)
    s.add_argument("--kv", nargs="+", default=["f16", "q8_0", "q4_0"], choices=list(KV_TYPES))
    s.add_argument("--no-f16-noflash", action="store_true",
                   help="skip the extra f16 row with flash attention off (binding default)")
    q = sub.add_parser("ppl", parents=[common])
    q.add_argument("--text", required=True)
    q.add_argument("--max-tokens", type=int, default=50000)
    q.add_argument("--ctx", type=int, default=1024)
    q.add_argument("--stride", type=int, default=512)
    q.add_argument("--kv", default="f16", choices=list(KV_TYPES))
    q.add_argument("--flash-attn", default="on", choices=["on", "off"])
    q.add_argument("--progress", action="store_true")
    t = sub.add_parser("tokens", parents=[common])
    t.add_argument("--text", required=True)
    t.add_argument("--max-tokens", type=int, default=0)
    a = p.parse_args()
    if a.cmd == "speed":
        a.configs = [(kv, "on") for kv in a.kv]
        if "f16" in a.kv and not a.no_f16_noflash:
            a.configs.insert(a.kv.index("f16") + 1, ("f16", "off"))
        res = cmd_speed(a)
    elif a.cmd == "ppl":
        res = cmd_ppl(a)
    else:
        res = cmd_tokens(a)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()

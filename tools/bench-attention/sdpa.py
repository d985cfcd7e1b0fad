"""PyTorch SDPA fp16 decode on contiguous KV at Llama-3-8B head shapes: the peer of
bench_attention. One query token per sequence, q [B, 32, 1, 128], k/v [B, 8, L, 128], GQA through
enable_gqa=True (no repeat_interleave copy), PyTorch's default backend choice. Median of CUDA-event
timed runs with L2 flushed before each by reading 256 MB (a sum: no dirty lines to write back
during the timed run), as bench_attention times itself.
Prints CSV: batch,ctx,us,backend.
With --prefill: one causal prompt per context, q [1, 32, L, 128] over k/v [1, 8, L, 128]
(is_causal=True), printed with batch 0; the KV heads are expanded to 32 beforehand (untimed)
when the default dispatch refuses GQA, so the fastest backend can run."""
import statistics
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

HQ, H, D = 32, 8, 128
PREFILL = "--prefill" in sys.argv[1:]
_args = [a for a in sys.argv[1:] if a != "--prefill"]
REPS = int(_args[0]) if _args else (5 if PREFILL else 20)


def time_us(fn, flush):
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for i in range(REPS + 3):
        flush.sum()
        start.record()
        fn()
        stop.record()
        torch.cuda.synchronize()
        if i >= 3:
            times.append(start.elapsed_time(stop) * 1000.0)
    return statistics.median(times)


def main():
    dev = torch.device("cuda")
    flush = torch.zeros(64 << 20, dtype=torch.float32, device=dev)
    print(f"# torch {torch.__version__} on {torch.cuda.get_device_name()}", file=sys.stderr)
    print("batch,ctx,us,backend")
    if PREFILL:
        prefill(dev, flush)
        return
    for batch in (1, 16, 64):
        for ctx in (1024, 4096, 16384, 32768):
            g = torch.Generator(device=dev).manual_seed(batch * 100003 + ctx)
            q = torch.randn(batch, HQ, 1, D, dtype=torch.float16, device=dev, generator=g)
            k = torch.randn(batch, H, ctx, D, dtype=torch.float16, device=dev, generator=g)
            v = torch.randn(batch, H, ctx, D, dtype=torch.float16, device=dev, generator=g)
            # Which backend the default dispatch takes: the first that accepts the call.
            backend = "default"
            for b in (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                      SDPBackend.CUDNN_ATTENTION, SDPBackend.MATH):
                try:
                    with sdpa_kernel(b):
                        F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
                    backend = b.name.lower()
                    break
                except Exception:  # this backend refuses the call
                    continue
            us = time_us(lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True), flush)
            print(f"{batch},{ctx},{us:.2f},{backend}", flush=True)
            del q, k, v
            torch.cuda.empty_cache()


def prefill(dev, flush):
    for ctx in (1024, 4096, 8192, 32768):
        g = torch.Generator(device=dev).manual_seed(ctx)
        q = torch.randn(1, HQ, ctx, D, dtype=torch.float16, device=dev, generator=g)
        k = torch.randn(1, H, ctx, D, dtype=torch.float16, device=dev, generator=g)
        v = torch.randn(1, H, ctx, D, dtype=torch.float16, device=dev, generator=g)
        best, best_name = None, ""
        for gqa in (True, False):
            kk = k if gqa else k.repeat_interleave(HQ // H, dim=1)
            vv = v if gqa else v.repeat_interleave(HQ // H, dim=1)
            for b in (SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION,
                      SDPBackend.EFFICIENT_ATTENTION):
                def run():
                    with sdpa_kernel(b):
                        F.scaled_dot_product_attention(q, kk, vv, is_causal=True, enable_gqa=gqa)
                try:
                    run()
                except Exception:  # this backend refuses the call
                    continue
                us = time_us(run, flush)
                if best is None or us < best:
                    best, best_name = us, f"{b.name.lower()}{'+gqa' if gqa else '+expanded'}"
        print(f"0,{ctx},{best:.2f},{best_name}", flush=True)
        del q, k, v
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()

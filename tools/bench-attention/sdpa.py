"""PyTorch SDPA fp16 decode on contiguous KV at Llama-3-8B head shapes: the peer of
bench_attention. One query token per sequence, q [B, 32, 1, 128], k/v [B, 8, L, 128], GQA through
enable_gqa=True (no repeat_interleave copy), PyTorch's default backend choice. Median of CUDA-event
timed runs with L2 flushed before each by reading 256 MB (a sum: no dirty lines to write back
during the timed run), as bench_attention times itself.
Prints CSV: batch,ctx,us,backend."""
import statistics
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

HQ, H, D = 32, 8, 128
REPS = int(sys.argv[1]) if len(sys.argv) > 1 else 20


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


if __name__ == "__main__":
    main()

/* engine/cuda/plan.h — what the CUDA backend works out on the host: the device memory layout,
 * once at start-up (every weight, activation and workspace as an offset into one of two arenas),
 * and the step plan, once per scheduler step (DESIGN §5: token ids, positions, each row's
 * sequence and cache slot, the block tables, the blocks that fill, the rows that want logits),
 * packed into one int32 buffer that one host-to-device copy moves and every layer then reads.
 *
 * Plain C without CUDA, so CI tests it (engine/cuda/plan_test.c) and the serving engine can size
 * its KV budget from cuda_layout's totals before any GPU is touched. Nothing here allocates. */
#ifndef DS_ENGINE_CUDA_PLAN_H
#define DS_ENGINE_CUDA_PLAN_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "engine/llama.h"
#include "engine/loader/model.h"
#include "kernels/paged_attention.h"
#include "kernels/sample.h"
#include "kvcache/paged_cache.h"

/* ---- device memory layout ----
 * Weights arena (W = the 2-byte weight type, fp16 or bf16; norms and RoPE frequencies fp32):
 *     tok_embd [vocab][d] W, output [vocab][d] W (absent when tied), output_norm [d],
 *     inv_freq [head_dim / 2], then per layer at layer0 + l * layer_stride:
 *     attn_norm [d], ffn_norm [d], wqkv [qd + 2 kvd][d] W (rows of wq, wk, wv),
 *     wo [d][qd] W, wgu [2][d_ff][d] W (w_gate then w_up), wdown [d][d_ff] W
 * Scratch arena (R = max_rows, L = logit_rows):
 *     x [R][d] fp32 (the residual stream), xn [R][d] W (normalised GEMM input),
 *     qkv [R][qd + 2 kvd] fp16, attn [R][qd] fp16, gu [2][R][d_ff] W (gate, up; SwiGLU writes
 *     the gate half), logit_x [L][d] W, logits [L][vocab] fp32, probs [L][vocab] fp32 (the
 *     sampler's workspace), sample_rows [L] sample_row, sample_out [L][2] int32 (each sampled
 *     row's token id, then its log-probability's fp32 bits), the attention split-K
 *     workspace, the cuBLAS workspace, the step plan [plan_words] int32; with bf16 weights also
 *     qkv_f32 [R][qd + 2 kvd] fp32 and attn_w [R][qd] bf16 (the fp16-only kernels sit between
 *     bf16 GEMMs).
 * Every offset is a multiple of 256 bytes. */
typedef struct cuda_layout {
    size_t weights_bytes, scratch_bytes;
    /* weights */
    size_t tok_embd, output, output_norm, inv_freq, layer0, layer_stride;
    size_t attn_norm, ffn_norm, wqkv, wo, wgu, wdown; /* within a layer */
    /* scratch */
    size_t x, xn, qkv, qkv_f32, attn, attn_w, gu, logit_x, logits, probs, sample_rows, sample_out;
    size_t attn_ws, cublas_ws, plan;
    size_t attn_ws_bytes, cublas_ws_bytes, plan_words;
    int logit_rows; /* rows of logits one LM-head GEMM produces; larger steps loop */
    int max_blocks; /* block-table width: blocks of the longest context */
} cuda_layout;

typedef struct cuda_layout_options {
    int max_rows, max_seqs, block_size;
    int bf16; /* 1: bf16 weights (adds the conversion buffers) */
} cuda_layout_options;

/* Fills the layout for a validated config. */
void cuda_layout_compute(const llama_config *config, const cuda_layout_options *options,
                         cuda_layout *out);

/* ---- step plan ---- */
typedef struct cuda_plan_limits {
    int max_rows, max_seqs, max_blocks, vocab_size, context_length;
} cuda_plan_limits;

/* Where each array sits in the buffer (int32 offsets) and the step's sizes. Arrays, in order:
 *     tokens, positions, row_seq, slots [n_rows]   slot = open block id * T + position % T
 *     full_table, open_table [n_seqs][table_stride]  kv_seq full_id / open_id (-1: none)
 *     fill_open, fill_full [n_fill]                  blocks that fill in this step, batch order
 *     logit_rows [n_logit_rows]                      rows whose logits the caller wants
 *     handoff [n_rows]                               async scheduling: the previous step's sample
 *                                                    row whose id becomes this row's token
 *                                                    (sample_handoff_cuda before the embedding),
 *                                                    or -1: the token is tokens[row]
 *     exec [PAGED_ATTENTION_EXEC_WORDS(n_rows)]       attention's prefill tiles + decode list
 *                                                    (runs of >= CUDA_PLAN_MIN_TILE_ROWS rows
 *                                                    of a prompt chunk in one block are tiles) */
#define CUDA_PLAN_MIN_TILE_ROWS 2
typedef struct cuda_plan {
    int n_rows, n_seqs, table_stride, n_fill, n_logit_rows, max_pos;
    size_t tokens, positions, row_seq, slots, full_table, open_table, fill_open, fill_full,
        logit_rows, handoff, exec;
    int n_handoff;  /* rows whose token is handed over (host only: never in the header) */
    size_t dyn;     /* a padded plan's CUDA_PLAN_DYN_WORDS run-time words (after logit_rows) */
    size_t n_words; /* int32 values in use: what the copy moves */
} cuda_plan;

/* int32 values a plan buffer must hold for these limits. */
size_t cuda_plan_capacity(const cuda_plan_limits *limits);

/* Validates the step as llama_engine_forward does (tokens per sequence, token ids, context,
 * reserved positions) plus the backend's limits (rows, sequences), and packs the plan into
 * buf[cuda_plan_capacity(limits)]. prev_row (NULL: none): engine/backend.h's launch hand-off;
 * prev_row[s] >= 0 takes sequence s's last token (not read, not checked) from that sample row of
 * the previous step, which the caller bounds. Errors: DS_EINVAL / DS_ERANGE naming the
 * sequence. */
ds_status cuda_plan_build(const kv_cache *cache, const llama_step_seq *seqs, int n_seqs,
                          const int32_t *prev_row, const cuda_plan_limits *limits, int32_t *buf,
                          cuda_plan *plan, char *msg, size_t msg_len);

/* ---- padded plans (CUDA graphs) ----
 * A decode-only step (every sequence one token, logits LAST) laid out for a graph captured for
 * `bucket` rows: every size is the bucket's (n_rows = n_fill = n_logit_rows = bucket, n_seqs =
 * bucket + 1, table_stride = limits->max_blocks), so each array sits where the graph's kernels
 * read it whatever the batch; what changes between replays is read from the run-time words at
 * dyn. Rows past the real sequences are padding: token 0 at position 0 of the extra, last
 * sequence (one token of sequence 0's open block as its whole context), slot -1 (nothing is
 * written), handoff -1, logits computed but not sampled. The graph does not read handoff: the
 * hand-off runs before the replay. */
enum {
    CUDA_PLAN_DYN_ROWS = 0,  /* real rows: the sampler stops there */
    CUDA_PLAN_DYN_FILLS = 1, /* real fills: kv_compress stops there */
    CUDA_PLAN_DYN_SPLIT = 2, /* attention blocks per split (the backend writes it) */
    CUDA_PLAN_DYN_WORDS = 4
};

/* Validates as cuda_plan_build does and writes the padded plan; DS_EINVAL for a step that is
 * not decode-only or does not fit the bucket (1 <= n_seqs <= bucket <= max_seqs, max_rows). */
ds_status cuda_plan_build_padded(const kv_cache *cache, const llama_step_seq *seqs, int n_seqs,
                                 const int32_t *prev_row, int bucket,
                                 const cuda_plan_limits *limits, int32_t *buf, cuda_plan *plan,
                                 char *msg, size_t msg_len);

/* ---- the plan on the wire (tensor parallelism) ----
 * Rank 0 builds the plan and broadcasts it: first a header of CUDA_PLAN_HEADER_WORDS int32
 * (a magic word, the command, the sizes), then, for a step, the n_words plan words; the other
 * ranks unpack the header to learn the sizes and where each array sits. IDLE keeps waiting
 * ranks' deadlines alive while the server has no work; STOP ends their loop. */
#define CUDA_PLAN_HEADER_WORDS 8

typedef enum cuda_plan_command {
    CUDA_PLAN_STEP = 1,
    CUDA_PLAN_IDLE = 2,
    CUDA_PLAN_STOP = 3
} cuda_plan_command;

/* Writes the header of p (NULL: an empty plan, for IDLE and STOP) into hdr. */
void cuda_plan_header_pack(cuda_plan_command command, const cuda_plan *p, int32_t *hdr);

/* Reads a header into *command and *p (sizes and offsets, as cuda_plan_build lays them out).
 * DS_ECORRUPT, naming the values, for a header that is not one or whose sizes exceed limits (a
 * non-step header must carry no rows), so the sizes a follower launches with fit its buffers (the
 * plan words, block ids included, are rank 0's own cuda_plan_build output). */
ds_status cuda_plan_header_unpack(const int32_t *hdr, const cuda_plan_limits *limits,
                                  cuda_plan_command *command, cuda_plan *p, char *msg,
                                  size_t msg_len);

#endif

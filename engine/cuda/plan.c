/* engine/cuda/plan.c — the CUDA backend's host-side arithmetic: device memory layout and the
 * per-step index plan (see plan.h). */
#include "engine/cuda/plan.h"

#include <string.h>

#include "common/log.h"

enum { ALIGN = 256 };

/* Extra split-K partial results the attention workspace holds beyond one per row: the launcher
 * aims at 4 CTAs per multiprocessor, so a small batch splits into up to 4 * SMs / kv heads
 * ranges (528 / 8 on an H100); fewer only means fewer splits. */
enum { ATTN_EXTRA_SPLITS = 1024 };
enum { CUBLAS_WORKSPACE_BYTES = 32 << 20 }; /* NVIDIA's advice for Hopper */

static size_t take(size_t *top, size_t bytes) {
    size_t at = *top;
    *top += (bytes + ALIGN - 1) / ALIGN * ALIGN;
    return at;
}

void cuda_layout_compute(const llama_config *c, const cuda_layout_options *o, cuda_layout *out) {
    memset(out, 0, sizeof *out);
    const size_t W = 2, d = (size_t)c->d_model, D = (size_t)c->head_dim;
    const size_t qd = (size_t)c->n_heads * D, kvd = (size_t)c->n_kv_heads * D;
    const size_t qkv = qd + 2 * kvd, ff = (size_t)c->d_ff, V = (size_t)c->vocab_size;
    const size_t R = (size_t)o->max_rows;

    size_t top = 0;
    out->tok_embd = take(&top, V * d * W);
    out->output = c->tied_embeddings ? out->tok_embd : take(&top, V * d * W);
    out->output_norm = take(&top, d * sizeof(float));
    out->inv_freq = take(&top, D / 2 * sizeof(float));
    out->layer0 = top;
    size_t in_layer = 0;
    out->attn_norm = take(&in_layer, d * sizeof(float));
    out->ffn_norm = take(&in_layer, d * sizeof(float));
    out->wqkv = take(&in_layer, qkv * d * W);
    out->wo = take(&in_layer, d * qd * W);
    out->wgu = take(&in_layer, 2 * ff * d * W);
    out->wdown = take(&in_layer, d * ff * W);
    out->layer_stride = in_layer;
    out->weights_bytes = top + (size_t)c->n_layers * in_layer;

    int L = o->max_seqs > 64 ? o->max_seqs : 64;
    out->logit_rows = L < o->max_rows ? L : o->max_rows;
    out->max_blocks = (c->context_length + o->block_size - 1) / o->block_size;
    cuda_plan_limits lim = {
        .max_rows = o->max_rows, .max_seqs = o->max_seqs, .max_blocks = out->max_blocks};
    out->plan_words = cuda_plan_capacity(&lim);
    out->attn_ws_bytes = (R + ATTN_EXTRA_SPLITS) * (size_t)c->n_heads * (D + 2) * sizeof(float);
    out->cublas_ws_bytes = CUBLAS_WORKSPACE_BYTES;

    top = 0;
    out->x = take(&top, R * d * sizeof(float));
    out->xn = take(&top, R * d * W);
    out->qkv = take(&top, R * qkv * 2);
    out->attn = take(&top, R * qd * 2);
    out->gu = take(&top, 2 * R * ff * W);
    out->logit_x = take(&top, (size_t)out->logit_rows * d * W);
    out->logits = take(&top, (size_t)out->logit_rows * V * sizeof(float));
    out->probs = take(&top, (size_t)out->logit_rows * V * sizeof(float));
    out->sample_rows = take(&top, (size_t)out->logit_rows * sizeof(sample_row));
    out->sample_out = take(&top, (size_t)out->logit_rows * 2 * sizeof(int32_t));
    out->attn_ws = take(&top, out->attn_ws_bytes);
    out->cublas_ws = take(&top, out->cublas_ws_bytes);
    out->plan = take(&top, out->plan_words * sizeof(int32_t));
    if (o->bf16) {
        out->qkv_f32 = take(&top, R * qkv * sizeof(float));
        out->attn_w = take(&top, R * qd * W);
    }
    out->scratch_bytes = top;
}

size_t cuda_plan_capacity(const cuda_plan_limits *lim) {
    /* 6 row arrays (with logit_rows and handoff), the attention's exec plan, 2 fill arrays (a block
     * that fills holds at least one new row, so at most one per row), 2 tables (a padded plan's
     * with one more sequence), and a padded plan's run-time words. */
    return 8 * (size_t)lim->max_rows + 2 * ((size_t)lim->max_seqs + 1) * lim->max_blocks +
           PAGED_ATTENTION_EXEC_WORDS(lim->max_rows) + CUDA_PLAN_DYN_WORDS;
}

/* The arrays' offsets from the sizes (the order of plan.h). */
static void lay_out(cuda_plan *p) {
    const size_t R = (size_t)p->n_rows, table = (size_t)p->n_seqs * p->table_stride;
    size_t top = 0;
    p->tokens = top, top += R;
    p->positions = top, top += R;
    p->row_seq = top, top += R;
    p->slots = top, top += R;
    p->full_table = top, top += table;
    p->open_table = top, top += table;
    p->fill_open = top, top += (size_t)p->n_fill;
    p->fill_full = top, top += (size_t)p->n_fill;
    p->logit_rows = top, top += (size_t)p->n_logit_rows;
    p->handoff = top, top += R;
    p->exec = top, top += R ? PAGED_ATTENTION_EXEC_WORDS(R) : 0; /* none for an empty plan */
    p->dyn = top;
    p->n_words = top;
}

enum { HEADER_MAGIC = 0x44535053 }; /* "DSPS" */

void cuda_plan_header_pack(cuda_plan_command command, const cuda_plan *p, int32_t *hdr) {
    static const cuda_plan none;
    if (!p) p = &none;
    const int32_t words[CUDA_PLAN_HEADER_WORDS] = {HEADER_MAGIC,    (int32_t)command, p->n_rows,
                                                   p->n_seqs,       p->table_stride,  p->n_fill,
                                                   p->n_logit_rows, p->max_pos};
    memcpy(hdr, words, sizeof words);
}

ds_status cuda_plan_header_unpack(const int32_t *hdr, const cuda_plan_limits *lim,
                                  cuda_plan_command *command, cuda_plan *p, char *msg,
                                  size_t msg_len) {
    memset(p, 0, sizeof *p);
    if (hdr[0] != HEADER_MAGIC || hdr[1] < CUDA_PLAN_STEP || hdr[1] > CUDA_PLAN_STOP)
        return ds_fail(msg, msg_len, DS_ECORRUPT,
                       "step header: magic 0x%08x command %d (expected 0x%08x and 1..3)",
                       (unsigned)hdr[0], hdr[1], HEADER_MAGIC);
    *command = (cuda_plan_command)hdr[1];
    p->n_rows = hdr[2], p->n_seqs = hdr[3], p->table_stride = hdr[4], p->n_fill = hdr[5];
    p->n_logit_rows = hdr[6], p->max_pos = hdr[7];
    const int step = *command == CUDA_PLAN_STEP;
    if (p->n_rows < 0 || p->n_rows > (step ? lim->max_rows : 0) || p->n_seqs < 0 ||
        p->n_seqs > lim->max_seqs || p->table_stride < 0 || p->table_stride > lim->max_blocks ||
        p->n_fill < 0 || p->n_fill > p->n_rows || p->n_logit_rows < 0 ||
        p->n_logit_rows > p->n_rows || p->max_pos < 0 || p->max_pos >= lim->context_length)
        return ds_fail(msg, msg_len, DS_ECORRUPT,
                       "step header: %d rows, %d sequences, table stride %d, %d fills, %d logit "
                       "rows, max position %d: outside the backend's limits (%d rows, %d "
                       "sequences, %d blocks, context %d)",
                       p->n_rows, p->n_seqs, p->table_stride, p->n_fill, p->n_logit_rows,
                       p->max_pos, lim->max_rows, lim->max_seqs, lim->max_blocks,
                       lim->context_length);
    lay_out(p);
    return DS_OK;
}

/* 1: sequence s's last token is handed over from the previous step. */
static int handed(const int32_t *prev_row, int s) { return prev_row && prev_row[s] >= 0; }

ds_status cuda_plan_build(const kv_cache *cache, const llama_step_seq *seqs, int n_seqs,
                          const int32_t *prev_row, const cuda_plan_limits *lim, int32_t *buf,
                          cuda_plan *p, char *msg, size_t msg_len) {
    const int T = cache->config.block_size;
    if (n_seqs < 0 || n_seqs > lim->max_seqs)
        return ds_fail(msg, msg_len, DS_EINVAL, "step of %d sequences: the backend takes 0..%d",
                       n_seqs, lim->max_seqs);
    memset(p, 0, sizeof *p);
    int R = 0, stride = 1, n_fill = 0, n_logits = 0;
    for (int s = 0; s < n_seqs; s++) {
        const llama_step_seq *sq = &seqs[s];
        const kv_seq *kv = sq->kv;
        if (sq->n_tokens <= 0)
            return ds_fail(msg, msg_len, DS_EINVAL, "sequence %d: no tokens in the step", s);
        if (kv->n_tokens + sq->n_tokens > lim->context_length)
            return ds_fail(msg, msg_len, DS_ERANGE,
                           "sequence %d: %d cached + %d new tokens exceed the context of %d", s,
                           kv->n_tokens, sq->n_tokens, lim->context_length);
        for (int i = 0; i < sq->n_tokens - handed(prev_row, s); i++)
            if (sq->tokens[i] < 0 || sq->tokens[i] >= lim->vocab_size)
                return ds_fail(msg, msg_len, DS_ERANGE,
                               "sequence %d: token %d = %d is outside the vocabulary [0, %d)", s, i,
                               sq->tokens[i], lim->vocab_size);
        if (kv->n_reserved != kv->n_tokens + sq->n_tokens)
            return ds_fail(msg, msg_len, DS_EINVAL,
                           "sequence %d: %d positions reserved for %d new tokens", s,
                           kv->n_reserved - kv->n_tokens, sq->n_tokens);
        int first, end;
        kv_seq_filling(cache, kv, &first, &end);
        n_fill += end - first;
        stride = kv->n_blocks > stride ? kv->n_blocks : stride;
        R += sq->n_tokens;
        n_logits += sq->logits == LLAMA_LOGITS_ALL ? sq->n_tokens : sq->logits == LLAMA_LOGITS_LAST;
    }
    if (R > lim->max_rows)
        return ds_fail(msg, msg_len, DS_EINVAL, "step of %d tokens exceeds max_step_tokens = %d", R,
                       lim->max_rows);
    /* The context check bounds n_blocks by max_blocks; fills by rows. */
    DS_ASSERT(stride <= lim->max_blocks && n_fill <= R);

    p->n_rows = R, p->n_seqs = n_seqs, p->table_stride = stride, p->n_fill = n_fill;
    p->n_logit_rows = n_logits;
    lay_out(p);

    int row = 0, fill = 0, lrow = 0;
    for (int s = 0; s < n_seqs; s++) {
        const llama_step_seq *sq = &seqs[s];
        const kv_seq *kv = sq->kv;
        int32_t *ft = buf + p->full_table + (size_t)s * stride;
        int32_t *ot = buf + p->open_table + (size_t)s * stride;
        for (int b = 0; b < stride; b++) {
            ft[b] = b < kv->n_blocks ? kv->full_id[b] : -1;
            ot[b] = b < kv->n_blocks ? kv->open_id[b] : -1;
        }
        int first, end;
        kv_seq_filling(cache, kv, &first, &end);
        for (int b = first; b < end; b++, fill++) {
            buf[p->fill_open + fill] = kv->open_id[b];
            buf[p->fill_full + fill] = kv->full_id[b];
        }
        const int from = sq->logits == LLAMA_LOGITS_ALL    ? 0
                         : sq->logits == LLAMA_LOGITS_LAST ? sq->n_tokens - 1
                                                           : sq->n_tokens;
        p->n_handoff += handed(prev_row, s);
        for (int i = 0; i < sq->n_tokens; i++, row++) {
            const int pos = kv->n_tokens + i;
            const int hand = handed(prev_row, s) && i == sq->n_tokens - 1;
            buf[p->tokens + row] = hand ? 0 : sq->tokens[i];
            buf[p->handoff + row] = hand ? prev_row[s] : -1;
            buf[p->positions + row] = pos;
            buf[p->row_seq + row] = s;
            buf[p->slots + row] = kv->open_id[pos / T] * T + pos % T;
            if (i >= from) buf[p->logit_rows + lrow++] = row;
            p->max_pos = pos > p->max_pos ? pos : p->max_pos;
        }
    }
    if (R)
        paged_attention_exec_build(buf + p->row_seq, buf + p->positions, R, T,
                                   CUDA_PLAN_MIN_TILE_ROWS, buf + p->exec);
    return DS_OK;
}

ds_status cuda_plan_build_padded(const kv_cache *cache, const llama_step_seq *seqs, int n_seqs,
                                 const int32_t *prev_row, int bucket, const cuda_plan_limits *lim,
                                 int32_t *buf, cuda_plan *p, char *msg, size_t msg_len) {
    if (n_seqs < 1 || n_seqs > bucket || bucket > lim->max_seqs || bucket > lim->max_rows)
        return ds_fail(
            msg, msg_len, DS_EINVAL,
            "padded step: %d sequences in a bucket of %d (at most %d sequences, %d rows)", n_seqs,
            bucket, lim->max_seqs, lim->max_rows);
    for (int s = 0; s < n_seqs; s++)
        if (seqs[s].n_tokens != 1 || seqs[s].logits != LLAMA_LOGITS_LAST)
            return ds_fail(msg, msg_len, DS_EINVAL,
                           "padded step: sequence %d brings %d tokens (logits mode %d): only "
                           "decodes are padded",
                           s, seqs[s].n_tokens, (int)seqs[s].logits);
    cuda_plan real;
    ds_status st = cuda_plan_build(cache, seqs, n_seqs, prev_row, lim, buf, &real, msg, msg_len);
    if (st != DS_OK) return st;
    const int T = cache->config.block_size, stride = lim->max_blocks, pad_seq = bucket;
    memset(p, 0, sizeof *p);
    p->n_rows = bucket, p->n_seqs = bucket + 1, p->table_stride = stride;
    p->n_fill = bucket, p->n_logit_rows = bucket, p->max_pos = real.max_pos;
    p->n_handoff = real.n_handoff;
    lay_out(p);
    p->n_words += CUDA_PLAN_DYN_WORDS;
    /* buf held the real plan; the padded one is written from the sequences again (the real
     * arrays only told us the sizes were valid). */
    memset(buf, 0, p->n_words * sizeof *buf);
    int fill = 0;
    for (int s = 0; s < bucket; s++) {
        int32_t *ft = buf + p->full_table + (size_t)s * stride;
        int32_t *ot = buf + p->open_table + (size_t)s * stride;
        const kv_seq *kv = s < n_seqs ? seqs[s].kv : NULL;
        for (int b = 0; b < stride; b++) {
            ft[b] = kv && b < kv->n_blocks ? kv->full_id[b] : -1;
            ot[b] = kv && b < kv->n_blocks ? kv->open_id[b] : -1;
        }
        buf[p->logit_rows + s] = s;
        buf[p->handoff + s] = kv && handed(prev_row, s) ? prev_row[s] : -1;
        if (!kv) { /* padding: one token at position 0 of the pad sequence, nothing written */
            buf[p->tokens + s] = 0, buf[p->positions + s] = 0;
            buf[p->row_seq + s] = pad_seq, buf[p->slots + s] = -1;
            continue;
        }
        const int pos = kv->n_tokens;
        buf[p->tokens + s] = handed(prev_row, s) ? 0 : seqs[s].tokens[0];
        buf[p->positions + s] = pos;
        buf[p->row_seq + s] = s, buf[p->slots + s] = kv->open_id[pos / T] * T + pos % T;
        int first, end;
        kv_seq_filling(cache, kv, &first, &end);
        for (int b = first; b < end; b++, fill++) {
            buf[p->fill_open + fill] = kv->open_id[b];
            buf[p->fill_full + fill] = kv->full_id[b];
        }
    }
    /* The pad sequence's only block: sequence 0's open block, whose slot 0 holds finite fp16
     * (written before or by this very step) that padding rows attend to and nobody keeps. */
    int32_t *pad_ft = buf + p->full_table + (size_t)pad_seq * stride;
    int32_t *pad_ot = buf + p->open_table + (size_t)pad_seq * stride;
    for (int b = 0; b < stride; b++)
        pad_ft[b] = -1, pad_ot[b] = -1;
    pad_ot[0] = seqs[0].kv->open_id[seqs[0].kv->n_tokens / T];
    buf[p->dyn + CUDA_PLAN_DYN_ROWS] = n_seqs;
    buf[p->dyn + CUDA_PLAN_DYN_FILLS] = fill;
    return DS_OK;
}

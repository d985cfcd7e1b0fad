/* plan_test — the CUDA backend's host arithmetic, on the CPU: the device layout accounts for
 * every weight exactly once and never overlaps, and the step plan carries each row's position,
 * sequence and cache slot, the block tables, the filling blocks and the logit rows of a mixed
 * batch (decode, prefill, chunk) over scattered block ids, and the async hand-off rows; bad steps
 * are refused by name. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/rng.h"
#include "engine/cuda/plan.h"
#include "engine/loader/synthetic.h"

static llama_config llama3_8b(void) {
    llama_config c;
    char msg[128];
    assert_int_equal(synthetic_shape("llama3-8b", &c, msg, sizeof msg), DS_OK);
    return c;
}

static void test_layout_weights(void **state) {
    (void)state;
    llama_config c = llama3_8b();
    cuda_layout_options o = {.max_rows = 512, .max_seqs = 64, .block_size = 32};
    cuda_layout L;
    cuda_layout_compute(&c, &o, &L);
    const size_t d = 4096, qd = 4096, kvd = 1024, ff = 14336, V = 128256;
    const size_t per_layer = (qd + 2 * kvd) * d + d * qd + 3 * ff * d; /* projections */
    const size_t params = 2 * V * d + 32 * per_layer;
    const size_t norms = (2 * 32 + 1) * d;
    assert_int_equal(params + norms, 8030261248ull); /* Llama-3-8B's parameter count */
    const size_t exact = 2 * params + 4 * (d + 64) + 32 * 4 * 2 * d;
    assert_true(L.weights_bytes >= exact);
    assert_true(L.weights_bytes - exact < 256 * (4 + 32 * 6));
    /* Regions of a layer in order, inside the stride; layers after the globals. */
    const size_t at[] = {L.attn_norm, L.ffn_norm, L.wqkv, L.wo, L.wgu, L.wdown, L.layer_stride};
    const size_t len[] = {4 * d, 4 * d, 2 * (qd + 2 * kvd) * d, 2 * d * qd, 4 * ff * d, 2 * d * ff};
    for (int i = 0; i < 6; i++) {
        assert_int_equal(at[i] % 256, 0);
        assert_true(at[i] + len[i] <= at[i + 1]);
    }
    assert_true(L.inv_freq + 4 * 64 <= L.layer0);
    assert_true(L.output >= L.tok_embd + 2 * V * d);

    c.tied_embeddings = 1;
    cuda_layout tied;
    cuda_layout_compute(&c, &o, &tied);
    assert_int_equal(tied.output, tied.tok_embd);
    assert_int_equal(L.weights_bytes - tied.weights_bytes, 2 * V * d);
}

static void test_layout_scratch(void **state) {
    (void)state;
    llama_config c = llama3_8b();
    cuda_layout_options o = {.max_rows = 300, .max_seqs = 100, .block_size = 16};
    cuda_layout L, B;
    cuda_layout_compute(&c, &o, &L);
    o.bf16 = 1;
    cuda_layout_compute(&c, &o, &B);
    assert_int_equal(L.logit_rows, 100); /* a whole decode batch in one LM-head GEMM */
    assert_int_equal(L.max_blocks, 512);
    assert_int_equal(L.qkv_f32, 0);
    assert_true(B.qkv_f32 > 0 && B.attn_w > B.qkv_f32);
    assert_true(B.scratch_bytes >= L.scratch_bytes + 300 * 6144 * 4 + 300 * 4096 * 2);
    /* Scratch regions in order, each large enough for max_rows rows. */
    const size_t at[] = {L.x,      L.xn,      L.qkv,       L.attn, L.gu,           L.logit_x,
                         L.logits, L.attn_ws, L.cublas_ws, L.plan, L.scratch_bytes};
    const size_t len[] = {300 * 4096 * 4,      300 * 4096 * 2,  300 * 6144 * 2,   300 * 4096 * 2,
                          2 * 300 * 14336 * 2, 100 * 4096 * 2,  100 * 128256 * 4, L.attn_ws_bytes,
                          L.cublas_ws_bytes,   L.plan_words * 4};
    for (int i = 0; i < 10; i++)
        assert_true(at[i] + len[i] <= at[i + 1]);
    o.max_rows = 16; /* logit chunks never exceed the rows a step can have */
    cuda_layout_compute(&c, &o, &L);
    assert_int_equal(L.logit_rows, 16);
}

/* ---- step plan ---- */

enum { T = 16, CONTEXT = 256 };

typedef struct fixture {
    kv_cache *cache;
    kv_seq seqs[3];
    int32_t tokens[3][64];
    cuda_plan_limits limits;
    int32_t *buf;
} fixture;

static int fixture_setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    kv_cache_config kc = {.n_layers = 2,
                          .n_kv_heads = 2,
                          .head_dim = 64,
                          .block_size = T,
                          .key_codec = {.method = DQ_FP16, .bits = 16},
                          .value_codec = {.method = DQ_FP16, .bits = 16},
                          .n_open_blocks = 40,
                          .n_full_blocks = 60,
                          .no_storage = 1};
    char msg[256];
    if (!f || kv_cache_create(&kc, &f->cache, msg, sizeof msg) != DS_OK) return -1;
    /* Scatter the free lists: reserve and release sequences of random lengths. */
    ds_rng rng = {7};
    kv_seq churn[5];
    int32_t junk[200] = {0};
    for (int i = 0; i < 5; i++) {
        kv_seq_init(&churn[i]);
        int n = 1 + (int)(ds_rng_u64(&rng) % 90);
        if (kv_seq_reserve(f->cache, &churn[i], junk, n, msg, sizeof msg) != DS_OK) return -1;
        kv_seq_commit(f->cache, &churn[i]);
    }
    for (int i = 0; i < 5; i++)
        kv_seq_release(f->cache, &churn[(i * 3) % 5]);
    for (int s = 0; s < 3; s++) {
        kv_seq_init(&f->seqs[s]);
        for (int i = 0; i < 64; i++)
            f->tokens[s][i] = (int32_t)(ds_rng_u64(&rng) % 1000);
    }
    f->limits = (cuda_plan_limits){.max_rows = 64,
                                   .max_seqs = 4,
                                   .max_blocks = CONTEXT / T,
                                   .vocab_size = 1000,
                                   .context_length = CONTEXT};
    f->buf = malloc(cuda_plan_capacity(&f->limits) * sizeof(int32_t));
    *state = f;
    return f->buf ? 0 : -1;
}

static int fixture_teardown(void **state) {
    fixture *f = *state;
    for (int s = 0; s < 3; s++) {
        if (f->seqs[s].n_reserved != f->seqs[s].n_tokens) kv_seq_rollback(f->cache, &f->seqs[s]);
        kv_seq_release(f->cache, &f->seqs[s]);
    }
    kv_cache_destroy(f->cache);
    free(f->buf);
    free(f);
    return 0;
}

static void reserve(fixture *f, int s, int n) {
    char msg[256];
    assert_int_equal(kv_seq_reserve(f->cache, &f->seqs[s], f->tokens[s], n, msg, sizeof msg),
                     DS_OK);
}

static void test_plan_mixed_batch(void **state) {
    fixture *f = *state;
    /* seq 0: 40 cached, decodes 1 (LAST); seq 1: prefill of 37 from 0 (ALL);
     * seq 2: 15 cached, a chunk of 20 that fills block 0 and block 1 (NONE). */
    reserve(f, 0, 40), kv_seq_commit(f->cache, &f->seqs[0]);
    reserve(f, 2, 15), kv_seq_commit(f->cache, &f->seqs[2]);
    reserve(f, 0, 1), reserve(f, 1, 37), reserve(f, 2, 20);
    llama_step_seq step[3] = {
        {.kv = &f->seqs[0], .tokens = f->tokens[0] + 40, .n_tokens = 1},
        {.kv = &f->seqs[1], .tokens = f->tokens[1], .n_tokens = 37, .logits = LLAMA_LOGITS_ALL},
        {.kv = &f->seqs[2],
         .tokens = f->tokens[2] + 15,
         .n_tokens = 20,
         .logits = LLAMA_LOGITS_NONE},
    };
    cuda_plan p;
    char msg[256];
    assert_int_equal(
        cuda_plan_build(f->cache, step, 3, NULL, &f->limits, f->buf, &p, msg, sizeof msg), DS_OK);
    assert_int_equal(p.n_rows, 58);
    assert_int_equal(p.n_seqs, 3);
    assert_int_equal(p.table_stride, 3); /* seq 0 and seq 1: 41 and 37 positions, 3 blocks */
    assert_int_equal(p.n_fill, 2 + 2);   /* seq 1: blocks 0, 1; seq 2: blocks 0, 1 */
    assert_int_equal(p.n_logit_rows, 1 + 37);
    assert_int_equal(p.max_pos, 40);
    assert_true(p.n_words <= cuda_plan_capacity(&f->limits));
    int row = 0, fill = 0;
    for (int s = 0; s < 3; s++) {
        const kv_seq *kv = &f->seqs[s];
        for (int b = 0; b < p.table_stride; b++) {
            const int32_t *ft = f->buf + p.full_table + (size_t)s * p.table_stride;
            const int32_t *ot = f->buf + p.open_table + (size_t)s * p.table_stride;
            assert_int_equal(ft[b], b < kv->n_blocks ? kv->full_id[b] : -1);
            assert_int_equal(ot[b], b < kv->n_blocks ? kv->open_id[b] : -1);
        }
        for (int i = 0; i < step[s].n_tokens; i++, row++) {
            const int pos = kv->n_tokens + i;
            assert_int_equal(f->buf[p.tokens + row], step[s].tokens[i]);
            assert_int_equal(f->buf[p.positions + row], pos);
            assert_int_equal(f->buf[p.row_seq + row], s);
            assert_int_equal(f->buf[p.slots + row], kv->open_id[pos / T] * T + pos % T);
        }
        int first, end;
        kv_seq_filling(f->cache, kv, &first, &end);
        for (int b = first; b < end; b++, fill++) {
            assert_int_equal(f->buf[p.fill_open + fill], kv->open_id[b]);
            assert_int_equal(f->buf[p.fill_full + fill], kv->full_id[b]);
            assert_true(kv->full_id[b] >= 0);
        }
    }
    /* Logit rows: seq 0's only row, then all of seq 1's. */
    assert_int_equal(f->buf[p.logit_rows], 0);
    for (int i = 0; i < 37; i++)
        assert_int_equal(f->buf[p.logit_rows + 1 + i], 1 + i);
    /* Attention's exec plan: prompt rows in one block are tiles (seq 1: blocks 0, 1, 2; seq 2:
     * blocks 1, 2), lone rows (seq 0's decode, seq 2's position 15) the decode list. */
    const int32_t *ex = f->buf + p.exec;
    const int32_t tiles[][2] = {{1, 16}, {17, 16}, {33, 5}, {39, 16}, {55, 3}};
    assert_int_equal(ex[0], 5);
    assert_int_equal(ex[1], 2);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(ex[2 + 2 * i], tiles[i][0]);
        assert_int_equal(ex[3 + 2 * i], tiles[i][1]);
    }
    assert_int_equal(ex[2 + 2 * p.n_rows], 0);
    assert_int_equal(ex[3 + 2 * p.n_rows], 38);
    assert_true(p.exec + PAGED_ATTENTION_EXEC_WORDS(p.n_rows) <= p.n_words);
    /* Block ids come from the scattered pool, not 0, 1, 2, ... */
    int in_order = 1;
    for (int i = 0; i < p.n_fill; i++)
        in_order &= f->buf[p.fill_full + i] == i;
    assert_false(in_order);
}

/* A padded plan (CUDA graphs): the bucket's fixed sizes and offsets whatever the batch, the real
 * rows as in the plain plan, padding rows that write nothing and read one token of sequence 0's
 * open block, and the run-time words. */
static void test_plan_padded(void **state) {
    fixture *f = *state;
    char msg[256];
    reserve(f, 0, 47), kv_seq_commit(f->cache, &f->seqs[0]);
    reserve(f, 2, 15), kv_seq_commit(f->cache, &f->seqs[2]);
    reserve(f, 0, 1), reserve(f, 2, 1); /* both decodes fill their block (positions 47, 15) */
    llama_step_seq step[2] = {{.kv = &f->seqs[0], .tokens = f->tokens[0] + 47, .n_tokens = 1},
                              {.kv = &f->seqs[2], .tokens = f->tokens[2] + 15, .n_tokens = 1}};
    cuda_plan p, one;
    assert_int_equal(cuda_plan_build_padded(f->cache, step, 1, NULL, 4, &f->limits, f->buf, &one,
                                            msg, sizeof msg),
                     DS_OK);
    assert_int_equal(
        cuda_plan_build_padded(f->cache, step, 2, NULL, 4, &f->limits, f->buf, &p, msg, sizeof msg),
        DS_OK);
    assert_memory_equal(&one, &p, offsetof(cuda_plan, max_pos)); /* sizes: the bucket's */
    assert_true(one.tokens == p.tokens && one.slots == p.slots && one.open_table == p.open_table &&
                one.fill_full == p.fill_full && one.logit_rows == p.logit_rows &&
                one.dyn == p.dyn && one.n_words == p.n_words);
    assert_int_equal(p.n_rows, 4);
    assert_int_equal(p.n_seqs, 5);
    assert_int_equal(p.table_stride, f->limits.max_blocks);
    assert_int_equal(p.n_fill, 4);
    assert_int_equal(p.n_logit_rows, 4);
    assert_int_equal(p.max_pos, 47);
    assert_true(p.n_words <= cuda_plan_capacity(&f->limits));
    assert_int_equal(f->buf[p.dyn + CUDA_PLAN_DYN_ROWS], 2);
    assert_int_equal(f->buf[p.dyn + CUDA_PLAN_DYN_FILLS], 2);
    const int S = p.table_stride;
    for (int s = 0; s < 2; s++) {
        const kv_seq *kv = step[s].kv;
        const int pos = kv->n_tokens;
        assert_int_equal(f->buf[p.tokens + s], step[s].tokens[0]);
        assert_int_equal(f->buf[p.positions + s], pos);
        assert_int_equal(f->buf[p.row_seq + s], s);
        assert_int_equal(f->buf[p.slots + s], kv->open_id[pos / T] * T + pos % T);
        assert_int_equal(f->buf[p.fill_open + s], kv->open_id[pos / T]);
        assert_int_equal(f->buf[p.fill_full + s], kv->full_id[pos / T]);
        for (int b = 0; b < S; b++) {
            assert_int_equal(f->buf[p.full_table + s * S + b],
                             b < kv->n_blocks ? kv->full_id[b] : -1);
            assert_int_equal(f->buf[p.open_table + s * S + b],
                             b < kv->n_blocks ? kv->open_id[b] : -1);
        }
    }
    for (int r = 0; r < 4; r++)
        assert_int_equal(f->buf[p.logit_rows + r], r);
    for (int r = 2; r < 4; r++) { /* padding */
        assert_int_equal(f->buf[p.slots + r], -1);
        assert_int_equal(f->buf[p.positions + r], 0);
        assert_int_equal(f->buf[p.row_seq + r], 4);
        assert_int_equal(f->buf[p.tokens + r], 0);
    }
    assert_int_equal(f->buf[p.open_table + 4 * S], f->seqs[0].open_id[47 / T]);
    assert_int_equal(f->buf[p.full_table + 4 * S], -1);
    for (int b = 1; b < S; b++)
        assert_int_equal(f->buf[p.open_table + 4 * S + b], -1);
    /* not decode-only, or not in the bucket */
    llama_step_seq two = step[0];
    two.n_tokens = 2;
    assert_int_equal(
        cuda_plan_build_padded(f->cache, &two, 1, NULL, 4, &f->limits, f->buf, &p, msg, sizeof msg),
        DS_EINVAL);
    assert_non_null(strstr(msg, "only decodes are padded"));
    assert_int_equal(
        cuda_plan_build_padded(f->cache, step, 2, NULL, 1, &f->limits, f->buf, &p, msg, sizeof msg),
        DS_EINVAL);
    assert_int_equal(
        cuda_plan_build_padded(f->cache, step, 2, NULL, 8, &f->limits, f->buf, &p, msg, sizeof msg),
        DS_EINVAL);
}

/* Async scheduling's hand-off: a handed-over token (a decode's, or the last of a recompute chunk)
 * is a placeholder neither read nor checked, its row names the previous step's sample row, every
 * other row (padding too) -1. */
static void test_plan_handoff(void **state) {
    fixture *f = *state;
    char msg[256];
    reserve(f, 0, 20), kv_seq_commit(f->cache, &f->seqs[0]);
    reserve(f, 2, 9), kv_seq_commit(f->cache, &f->seqs[2]);
    reserve(f, 0, 1), reserve(f, 2, 1);
    const int32_t unknown = -1;
    llama_step_seq step[2] = {{.kv = &f->seqs[0], .tokens = f->tokens[0] + 20, .n_tokens = 1},
                              {.kv = &f->seqs[2], .tokens = &unknown, .n_tokens = 1}};
    const int32_t prev_row[2] = {-1, 3};
    cuda_plan p;
    assert_int_equal(
        cuda_plan_build(f->cache, step, 2, prev_row, &f->limits, f->buf, &p, msg, sizeof msg),
        DS_OK);
    assert_int_equal(p.n_handoff, 1);
    assert_int_equal(f->buf[p.handoff], -1);
    assert_int_equal(f->buf[p.handoff + 1], 3);
    assert_int_equal(f->buf[p.tokens], f->tokens[0][20]);
    assert_int_equal(f->buf[p.tokens + 1], 0);
    assert_true(p.handoff + p.n_rows <= p.exec && p.n_words <= cuda_plan_capacity(&f->limits));
    assert_int_equal(
        cuda_plan_build(f->cache, step, 2, NULL, &f->limits, f->buf, &p, msg, sizeof msg),
        DS_ERANGE); /* without the hand-off the placeholder is a token */
    assert_int_equal(cuda_plan_build_padded(f->cache, step, 2, prev_row, 4, &f->limits, f->buf, &p,
                                            msg, sizeof msg),
                     DS_OK);
    assert_int_equal(p.n_handoff, 1);
    const int32_t want[4] = {-1, 3, -1, -1};
    for (int r = 0; r < 4; r++)
        assert_int_equal(f->buf[p.handoff + r], want[r]);
    assert_int_equal(f->buf[p.tokens + 1], 0);
    kv_seq_rollback(f->cache, &f->seqs[2]);
    reserve(f, 2, 3);
    int32_t chunk[3] = {f->tokens[2][9], f->tokens[2][10], -1};
    step[1].n_tokens = 3;
    step[1].tokens = chunk;
    assert_int_equal(
        cuda_plan_build(f->cache, step, 2, prev_row, &f->limits, f->buf, &p, msg, sizeof msg),
        DS_OK);
    const int32_t want_chunk[4] = {-1, -1, -1, 3};
    for (int r = 0; r < 4; r++)
        assert_int_equal(f->buf[p.handoff + r], want_chunk[r]);
    assert_int_equal(f->buf[p.tokens + 2], chunk[1]);
    assert_int_equal(f->buf[p.tokens + 3], 0);
    chunk[1] = -1; /* only the last token is handed over: the others are checked */
    assert_int_equal(
        cuda_plan_build(f->cache, step, 2, prev_row, &f->limits, f->buf, &p, msg, sizeof msg),
        DS_ERANGE);
}

static void test_plan_errors(void **state) {
    fixture *f = *state;
    char msg[256];
    cuda_plan p;
    reserve(f, 0, 30);
    llama_step_seq step = {.kv = &f->seqs[0], .tokens = f->tokens[0], .n_tokens = 30};
    cuda_plan_limits small = f->limits;
    small.max_rows = 20;
    assert_int_equal(cuda_plan_build(f->cache, &step, 1, NULL, &small, f->buf, &p, msg, sizeof msg),
                     DS_EINVAL);
    assert_non_null(strstr(msg, "max_step_tokens = 20"));
    step.n_tokens = 29; /* 30 reserved */
    assert_int_equal(
        cuda_plan_build(f->cache, &step, 1, NULL, &f->limits, f->buf, &p, msg, sizeof msg),
        DS_EINVAL);
    assert_non_null(strstr(msg, "30 positions reserved for 29"));
    step.n_tokens = 30;
    int32_t bad[30] = {0};
    bad[7] = 1000;
    step.tokens = bad;
    assert_int_equal(
        cuda_plan_build(f->cache, &step, 1, NULL, &f->limits, f->buf, &p, msg, sizeof msg),
        DS_ERANGE);
    assert_non_null(strstr(msg, "token 7 = 1000"));
    llama_step_seq five[5] = {step, step, step, step, step};
    assert_int_equal(
        cuda_plan_build(f->cache, five, 5, NULL, &f->limits, f->buf, &p, msg, sizeof msg),
        DS_EINVAL);
    assert_non_null(strstr(msg, "5 sequences"));
    step.tokens = f->tokens[0];
    assert_int_equal(
        cuda_plan_build(f->cache, &step, 1, NULL, &f->limits, f->buf, &p, msg, sizeof msg), DS_OK);
}

/* The header rank 0 broadcasts gives the other ranks the same sizes and offsets; a corrupt one
 * is refused before any kernel could read out of bounds. */
static void test_plan_header(void **state) {
    fixture *f = *state;
    char msg[256];
    cuda_plan p, q;
    reserve(f, 0, 30);
    reserve(f, 1, 1);
    llama_step_seq step[2] = {
        {.kv = &f->seqs[0], .tokens = f->tokens[0], .n_tokens = 30},
        {.kv = &f->seqs[1], .tokens = f->tokens[1], .n_tokens = 1, .logits = LLAMA_LOGITS_LAST}};
    assert_int_equal(
        cuda_plan_build(f->cache, step, 2, NULL, &f->limits, f->buf, &p, msg, sizeof msg), DS_OK);
    int32_t hdr[CUDA_PLAN_HEADER_WORDS];
    cuda_plan_header_pack(CUDA_PLAN_STEP, &p, hdr);
    cuda_plan_command cmd = 0;
    assert_int_equal(cuda_plan_header_unpack(hdr, &f->limits, &cmd, &q, msg, sizeof msg), DS_OK);
    assert_int_equal(cmd, CUDA_PLAN_STEP);
    assert_memory_equal(&p, &q, sizeof p);
    cuda_plan_header_pack(CUDA_PLAN_STOP, NULL, hdr);
    assert_int_equal(cuda_plan_header_unpack(hdr, &f->limits, &cmd, &q, msg, sizeof msg), DS_OK);
    assert_int_equal(cmd, CUDA_PLAN_STOP);
    assert_int_equal(q.n_rows, 0);
    assert_int_equal(q.n_words, 0);
    /* every size word pushed past its limit, then a wrong magic and command */
    for (int w = 2; w < CUDA_PLAN_HEADER_WORDS; w++) {
        cuda_plan_header_pack(CUDA_PLAN_STEP, &p, hdr);
        hdr[w] = w == 7 ? f->limits.context_length : 1 << 30;
        assert_int_equal(cuda_plan_header_unpack(hdr, &f->limits, &cmd, &q, msg, sizeof msg),
                         DS_ECORRUPT);
        hdr[w] = -1;
        assert_int_equal(cuda_plan_header_unpack(hdr, &f->limits, &cmd, &q, msg, sizeof msg),
                         DS_ECORRUPT);
    }
    cuda_plan_header_pack(CUDA_PLAN_IDLE, &p, hdr); /* an idle header carrying rows */
    assert_int_equal(cuda_plan_header_unpack(hdr, &f->limits, &cmd, &q, msg, sizeof msg),
                     DS_ECORRUPT);
    cuda_plan_header_pack(CUDA_PLAN_STEP, &p, hdr);
    hdr[0] ^= 1;
    assert_int_equal(cuda_plan_header_unpack(hdr, &f->limits, &cmd, &q, msg, sizeof msg),
                     DS_ECORRUPT);
    assert_non_null(strstr(msg, "magic"));
    cuda_plan_header_pack((cuda_plan_command)4, &p, hdr);
    assert_int_equal(cuda_plan_header_unpack(hdr, &f->limits, &cmd, &q, msg, sizeof msg),
                     DS_ECORRUPT);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layout_weights),
        cmocka_unit_test(test_layout_scratch),
        cmocka_unit_test_setup_teardown(test_plan_mixed_batch, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_plan_padded, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_plan_handoff, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_plan_errors, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_plan_header, fixture_setup, fixture_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

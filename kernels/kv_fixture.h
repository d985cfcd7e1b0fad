/* kernels/kv_fixture.h — test support: random paged KV caches of one layer in the kernels' layout
 * (kernels/kv_pages.h), their full pages written by the C codec (kvcache/decoquant.h), ready as
 * paged_attention_params on the host. Used by kernels/paged_attention_test (CPU), tests/gpu/ and
 * tools/bench-attention/. Test-only (it includes kvcache/ to write pages with the C codec; formats
 * convert with kvcache/page_format.h).
 *
 * Adversarial by construction (DESIGN: paging tests): pages are scattered over a pool larger than
 * needed in a random order; unused pages, the padding of open blocks and every byte nothing
 * should read hold NaN (0xff bytes), so a read past the end shows in the output. */
#ifndef DS_KERNELS_KV_FIXTURE_H
#define DS_KERNELS_KV_FIXTURE_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "kernels/kv_pages.h"
#include "kernels/paged_attention.h"
#include "kvcache/decoquant.h"

typedef struct kv_fixture_config {
    int head_dim, block_size, n_kv_heads, n_q_heads;
    dq_config key_codec, value_codec; /* block_size and head_dim are filled in */
    int n_seqs;
    /* Rows of sequence s are positions [first[s], last[s]] (decode: first = last). Every block
     * before last / block_size is full (compressed); blocks first / T .. last / T are open. */
    const int *first, *last;
    int spare_pages; /* unused (NaN) pages mixed into each pool */
    uint64_t seed;
} kv_fixture_config;

typedef struct kv_fixture {
    dq_format dq_key, dq_value;
    paged_attention_params params; /* host pointers into the buffers below; out = out_buf */
    uint8_t *full;                 /* [n_full_pages][n_kv_heads][key page | value page] */
    size_t full_bytes;
    uint16_t *open; /* [n_open_blocks][2][T][H][D] */
    size_t open_elems;
    int32_t *full_table, *open_table, *row_seq, *row_pos;
    uint16_t *q, *out_buf;
    int n_full_pages, n_open_blocks;
} kv_fixture;

/* Builds the cache (seeded, deterministic). Keys are Gaussian with a few outlier channels 5-20x
 * larger, values Gaussian, queries Gaussian. Errors name the codec field or DS_ENOMEM. */
ds_status kv_fixture_create(const kv_fixture_config *config, kv_fixture **out, char *msg,
                            size_t msg_len);
void kv_fixture_destroy(kv_fixture *fx);

#endif

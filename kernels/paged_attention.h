/* kernels/paged_attention.h — attention of query rows over the paged, compressed KV cache of one
 * layer: the parameter struct shared by the C reference (here) and the CUDA kernel
 * (kernels/cuda.h: paged_attention_cuda), and the semantics both implement.
 *
 * A row is one query token of one sequence at position pos. It attends to positions 0..pos:
 * every full block before its own (b < pos / T) from the compressed page full_table[seq][b], and
 * its own block, positions [pos / T * T, pos], exact from the fp16 open block
 * open_table[seq][pos / T] (the engine's step protocol: a token sees earlier blocks compressed and
 * its own block exact, however the prompt was chunked). Decode is one row per sequence; a prefill
 * chunk is several rows of one sequence at consecutive positions, each attending causally. GQA:
 * query head qh reads kv head qh / (n_q_heads / n_kv_heads).
 *
 *     out[row][qh] = sum_t softmax_t(scale * q . k_t) v_t          (fp32 accumulation, fp16 out)
 *
 * Everything is on the device for the CUDA kernel and on the host for the reference; the tables,
 * row_seq and row_pos are built once per step by the host (plan) and reused by every layer. */
#ifndef DS_KERNELS_PAGED_ATTENTION_H
#define DS_KERNELS_PAGED_ATTENTION_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "kernels/kv_pages.h"

typedef struct paged_attention_params {
    const uint16_t *q; /* [n_rows][q_stride] fp16; head qh of row r at q + r * q_stride + qh * D */
    size_t q_stride;
    uint16_t *out; /* [n_rows][out_stride] fp16, same addressing as q */
    size_t out_stride;
    const int32_t *row_seq;    /* [n_rows] sequence whose tables row r reads */
    const int32_t *row_pos;    /* [n_rows] position of row r's token, >= 0 */
    const int32_t *full_table; /* [n_seqs][table_stride] full-pool page of each full block */
    const int32_t *open_table; /* [n_seqs][table_stride] open-pool block of each open block */
    int table_stride;
    int n_rows, n_q_heads, n_kv_heads, head_dim, block_size;
    int max_pos; /* >= every row_pos (the CUDA launcher sizes its split-K plan from it) */
    float scale; /* usually 1 / sqrt(head_dim) */
    kv_layer_view cache;
    kv_page_format key_format, value_format;
    /* How the CUDA launcher runs the rows (the reference ignores it): NULL, every row by the
     * decode kernel; else PAGED_ATTENTION_EXEC_WORDS(n_rows) words on the device written by
     * paged_attention_exec_build: the prefill kernel takes the tiles, the decode kernel the list.
     */
    const int32_t *exec;
} paged_attention_params;

/* The execution plan: exec[0] = n_tiles, exec[1] = n_list, exec[2 + 2i], exec[3 + 2i] = first
 * row and row count of tile i (rows of one sequence at consecutive positions inside one block),
 * exec[2 + 2 n_rows + j] = row j of the decode list. Sized for n_rows so that the launch grids
 * need no host copy of the counts (a follower rank or a graph replay launches the same). */
#define PAGED_ATTENTION_EXEC_WORDS(n_rows) (2 + 3 * (size_t)(n_rows))

/* Splits rows into prefill tiles and the decode list: every run of >= min_tile_rows rows of one
 * sequence at consecutive positions in one block becomes a tile, the other rows go to the list.
 * row_seq/row_pos: host arrays of n_rows; exec: PAGED_ATTENTION_EXEC_WORDS(n_rows) words. */
void paged_attention_exec_build(const int32_t *row_seq, const int32_t *row_pos, int n_rows,
                                int block_size, int min_tile_rows, int32_t *exec);

/* Checks shapes and formats (head_dim and block_size of both formats, divisibility of heads);
 * names the first bad field. The reference and the CUDA launcher both call it. */
ds_status paged_attention_validate(const paged_attention_params *p, char *msg, size_t msg_len);

/* The definition of correct: pages decoded with kv_page_decode_ref, scores and softmax in
 * double, output rounded to fp16. Allocates its scratch (a reference, not a serving path);
 * p must be valid. */
void paged_attention_ref(const paged_attention_params *p);

/* Bytes a run must read from the cache and the queries (pages of full blocks, own-block fp16
 * rows, q) and write (out): the floor for bandwidth figures. row_pos is a host copy. */
double paged_attention_min_bytes(const paged_attention_params *p, const int32_t *row_pos);

#endif

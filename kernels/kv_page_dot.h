/* kernels/kv_page_dot.h — the CPU attention's two products with one KV page (kernels/kv_pages.h)
 * without dequantizing it: the page's codes are unpacked once (AVX2: shifted out of one load in
 * registers) into a float tile that every query row and head of the step reading the page shares,
 * and the groups' (scale, min) are folded into each query or softmax weight vector, as the GPU
 * kernels do. The engine (engine/llama.c) calls them per kv head and page on its thread pool, for
 * all the vectors (query rows x heads) that read the page at once: a prompt chunk's rows share
 * each load of codes (AVX2: tiles of 2 vectors x 32 columns or 4 tokens).
 *
 * A quantized page stores S, a matrix in storage order whose element k is code_k * scale_g +
 * min_g (g = k / group_len, groups never cross a row of S): for RTN and KIVI values S = K [T][D],
 * for KIVI keys S = K^T [D][T], for DecoQuant the large tensor B (axis chan: [rank * d2][t2]);
 * fp16 pages are K [T][D] with scale 1 and min 0.
 *   keys as rows of S (fp16, RTN):
 *     s_t = sum_g scale_g (sum_{c in g} code q_c) + min_g sum_{c in g} q_c
 *   keys as columns (KIVI):
 *     s_t = sum_c (q_c scale_{c,g}) code_{c,t} + sum_c q_c min_{c,g}
 *   values (rows of S = V):
 *     out_c += sum_t (p_t scale_{t,g}) code_{t,c} + sum_t p_t min_{t,g}
 *   DecoQuant, t = t1i * t2 + t2i, c = c1 * d2 + c2, in the decomposed domain (no A x B product):
 *     keys:   qA[r, c2] = sum_c1 q[c1, c2] A[(t1i, c1), r]
 *             s_t = sum_{r, c2} qA[r, c2] B[r, (t2i, c2)]
 *     values: pB[r, c2] = sum_t2i p_t B[r, (t2i, c2)]
 *             out[c1, c2] += sum_r A[(t1i, c1), r] pB[r, c2]
 * Codes are small integers, exact as floats, so the tile holds exactly what unpacking in the
 * product would give. Each output is summed in one order fixed by the format alone (never by the
 * other vectors of the call, heads or threads), so a row's attention does not depend on its batch
 * or chunk: n vectors in one call give the bits of n calls of one (kv_page_dot_test checks it).
 * The order differs from dequantizing the page and multiplying (kv_page_decode_ref): the results
 * agree to float rounding of the same sums (kernels/kv_page_dot_test states the bound). AVX2 +
 * FMA when qm_isa_active() allows and the page's widths are multiples of 8, plain C otherwise;
 * nothing here uses AVX-512. */
#ifndef DS_KERNELS_KV_PAGE_DOT_H
#define DS_KERNELS_KV_PAGE_DOT_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/kv_pages.h"

/* Floats of a page's tile: its codes (fp16 pages: values) in storage order, its groups' (scale,
 * min) and DecoQuant's small tensor, all converted to float. */
size_t kv_page_tile_floats(const kv_page_format *f);

/* Unpacks `page` into tile [kv_page_tile_floats]: what the products below read. */
void kv_page_unpack(const kv_page_format *f, const uint8_t *page, float *tile);

/* Floats of scratch one call of the products below needs for up to max_vectors vectors and pages
 * of format f (the queries scaled by the groups' scales, the groups' sums of each vector;
 * DecoQuant's qA / pB and, for row groups, B dequantized). Each thread brings its own. */
size_t kv_page_dot_scratch_floats(const kv_page_format *f, int max_vectors);

/* s_i[t] = scale * q_i . k_t for n queries q_i = q + i * q_stride [D] and the T keys of a key
 * page, given its tile; s_i = s + i * s_stride [T]. */
void kv_page_scores(const kv_page_format *f, const float *tile, int n, const float *q,
                    size_t q_stride, float scale, float *s, size_t s_stride, float *scratch);

/* out_i[c] += sum_t p_i[t] v_t[c] over the T values of a value page, given its tile, for n weight
 * vectors p_i = p + i * p_stride [T]; out_i = out + i * out_stride [D]. */
void kv_page_values(const kv_page_format *f, const float *tile, int n, const float *p,
                    size_t p_stride, float *out, size_t out_stride, float *scratch);

#endif

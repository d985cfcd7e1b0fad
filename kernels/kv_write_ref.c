/* kernels/kv_write_ref.c — C reference of reshape_and_cache (see kv_write.h). */
#include "kernels/kv_write.h"

#include <string.h>

void reshape_and_cache_ref(const reshape_and_cache_params *p) {
    const int T = p->block_size, H = p->n_kv_heads, D = p->head_dim;
    for (int r = 0; r < p->n_rows; r++) {
        const int32_t slot = p->slots[r];
        if (slot < 0) continue;
        uint16_t *blk = p->cache.open + (size_t)(slot / T) * p->cache.open_block_stride;
        for (int which = 0; which < 2; which++) {
            const uint16_t *src =
                which ? p->v + (size_t)r * p->v_stride : p->k + (size_t)r * p->k_stride;
            uint16_t *dst = blk + ((size_t)which * T + slot % T) * H * D;
            memcpy(dst, src, (size_t)H * D * sizeof(uint16_t));
        }
    }
}

/* kvcache/page_format.h — the kernels' view of a codec format: kernels/kv_pages.h's
 * kv_page_format carries the resolved geometry of a dq_format (kernels/ sits below kvcache/ and
 * never includes it), so whoever owns both (the CUDA backend, kernel tests and benchmarks)
 * converts here. */
#ifndef DS_KVCACHE_PAGE_FORMAT_H
#define DS_KVCACHE_PAGE_FORMAT_H

#include "kernels/kv_pages.h"
#include "kvcache/decoquant.h"

kv_page_format kv_page_format_from_dq(const dq_format *f);

#endif

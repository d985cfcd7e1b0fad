/* tools/eval/kv_forward.c — the forward pass with an engine-read or codec-read KV cache (see
 * kv_forward.h). */
#include "tools/eval/kv_forward.h"

#include <stdlib.h>
#include <string.h>

#include "common/half.h"
#include "engine/backend_open.h"

static const char *const READ_NAMES[] = {"auto", "engine", "codec"};

ds_status kv_read_from_name(const char *name, kv_read *out, char *msg, size_t msg_len) {
    for (int i = 0; i < 3; i++)
        if (!strcmp(name, READ_NAMES[i])) {
            *out = (kv_read)i;
            return DS_OK;
        }
    return ds_fail(msg, msg_len, DS_EINVAL, "--kv-read = '%s': expected auto, engine or codec",
                   name);
}

const char *kv_read_name(kv_read read) { return READ_NAMES[read]; }

/* The cache (codec, or fp16 for the codec's round trip) and the backend over it. */
static ds_status open_cache(kv_forward *f, const llama_model *model, const kv_forward_options *o,
                            int codec_read, char *msg, size_t msg_len) {
    const llama_config *c = &model->config;
    const int max_seqs = o->max_seqs > 1 ? o->max_seqs : 1;
    kv_cache_config kc = {.n_layers = c->n_layers,
                          .n_kv_heads = c->n_kv_heads,
                          .head_dim = c->head_dim,
                          .block_size = o->block_size,
                          .key_codec = o->key_codec,
                          .value_codec = o->value_codec,
                          .n_open_blocks = o->max_step_tokens / o->block_size + 2 * max_seqs,
                          .n_full_blocks = max_seqs * (o->max_seq_tokens / o->block_size + 1),
                          .no_storage = o->cuda};
    size_t open_bytes, full_bytes;
    ds_status st = kv_cache_block_bytes(&kc, &open_bytes, &full_bytes, msg, msg_len);
    if (st != DS_OK) return st;
    f->bytes_per_token = (double)full_bytes / o->block_size;
    if (codec_read) {
        kc.key_codec = kc.value_codec = (dq_config){.method = DQ_FP16, .bits = 16};
        kc.no_storage = 0;
    }
    st = kv_cache_create(&kc, &f->cache, msg, msg_len);
    engine_backend_options bo = {.cuda = o->cuda && !codec_read,
                                 .max_step_tokens = o->max_step_tokens,
                                 .max_seqs = max_seqs,
                                 .cpu_weights = o->weights,
                                 .tensor_parallel = o->tensor_parallel,
                                 .n_nodes = 1,
                                 .tp_timeout_ms = 60000};
    if (st == DS_OK) st = engine_backend_open(model, f->cache, &bo, &f->backend, msg, msg_len);
    if (st != DS_OK) {
        kv_cache_destroy(f->cache);
        f->cache = NULL;
    }
    return st;
}

ds_status kv_forward_open(kv_forward *f, const llama_model *model, const kv_forward_options *o,
                          char *msg, size_t msg_len) {
    memset(f, 0, sizeof *f);
    f->model = model;
    dq_config kc = o->key_codec, vc = o->value_codec;
    kc.block_size = vc.block_size = o->block_size;
    kc.head_dim = vc.head_dim = model->config.head_dim;
    ds_status st = dq_format_init(&f->key_format, &kc, DQ_KEYS, msg, msg_len);
    if (st == DS_OK) st = dq_format_init(&f->value_format, &vc, DQ_VALUES, msg, msg_len);
    if (st != DS_OK) return st;
    if (o->read == KV_READ_CODEC && o->cuda)
        return ds_fail(msg, msg_len, DS_EINVAL,
                       "--kv-read codec: the round trip rewrites CPU pages; use --device cpu");
    /* The engine accepts 3-bit caches, but its CPU attention reads 16-, 8-, 4- and 2-bit pages
     * only (kernels/kv_pages.h): its 3-bit results are not the codec's. */
    const int three_bits = kc.bits == 3 || vc.bits == 3;
    if (three_bits && o->read == KV_READ_ENGINE)
        return ds_fail(msg, msg_len, DS_EUNSUPPORTED,
                       "--kv-read engine: 3-bit pages are not read by the engine's attention "
                       "(kernels/kv_pages.h); use --kv-read codec or auto");
    f->read = o->read == KV_READ_CODEC || three_bits ? KV_READ_CODEC : KV_READ_ENGINE;
    st = open_cache(f, model, o, f->read == KV_READ_CODEC, msg, msg_len);
    if (st == DS_EUNSUPPORTED && o->read == KV_READ_AUTO && !o->cuda) {
        f->read = KV_READ_CODEC;
        st = open_cache(f, model, o, 1, msg, msg_len);
    }
    f->block_steps =
        f->read == KV_READ_CODEC && (f->key_format.cfg.bits < 16 || f->value_format.cfg.bits < 16);
    if (st == DS_OK && f->read == KV_READ_CODEC) {
        size_t kw = dq_workspace_bytes(&f->key_format), vw = dq_workspace_bytes(&f->value_format);
        size_t kp = dq_page_bytes(&f->key_format), vp = dq_page_bytes(&f->value_format);
        f->page = malloc(kp > vp ? kp : vp);
        f->decoded = malloc((size_t)o->block_size * model->config.head_dim * sizeof(float));
        f->work = aligned_alloc(16, ((kw > vw ? kw : vw) + 15) / 16 * 16);
        if (!f->page || !f->decoded || !f->work)
            st = ds_fail(msg, msg_len, DS_ENOMEM, "kv forward: out of memory");
    }
    if (st != DS_OK) kv_forward_close(f);
    return st;
}

void kv_forward_close(kv_forward *f) {
    if (f->backend.destroy) f->backend.destroy(f->backend.impl);
    kv_cache_destroy(f->cache);
    free(f->page), free(f->decoded), free(f->work);
    memset(f, 0, sizeof *f);
}

/* Replaces every page of full block `block` of seq by its round trip through the codec. The
 * cache is this kv_forward's own fp16 cache, whose full pages are fp16 [T][D] rows. */
static void round_trip_block(kv_forward *f, const kv_seq *seq, int block) {
    const llama_config *c = &f->model->config;
    const size_t values = (size_t)f->cache->config.block_size * c->head_dim;
    for (int layer = 0; layer < c->n_layers; layer++)
        for (int head = 0; head < c->n_kv_heads; head++)
            for (int which = 0; which < 2; which++) {
                const dq_format *fmt = which ? &f->value_format : &f->key_format;
                if (fmt->cfg.bits == 16) continue;
                uint16_t *rows =
                    (uint16_t *)kv_cache_full_page(f->cache, seq, layer, head, block, which);
                dq_compress_page(fmt, rows, (size_t)c->head_dim, f->page, f->work);
                dq_decompress_page(fmt, f->page, f->decoded, (size_t)c->head_dim, f->work);
                for (size_t i = 0; i < values; i++)
                    rows[i] = ds_float_to_half(f->decoded[i]);
            }
}

ds_status kv_forward_batch(kv_forward *f, const llama_step_seq *seqs, int n_seqs, float *logits,
                           char *msg, size_t msg_len) {
    const int T = f->cache->config.block_size;
    const int cut = f->block_steps;
    ds_status st = DS_OK;
    int reserved = 0;
    for (; st == DS_OK && reserved < n_seqs; reserved++) {
        const llama_step_seq *s = &seqs[reserved];
        if (cut && s->kv->n_tokens % T + s->n_tokens > T)
            st = ds_fail(msg, msg_len, DS_EINVAL,
                         "kv forward: sequence %d: %d tokens from position %d cross a block "
                         "boundary (--kv-read codec runs one block at a time)",
                         reserved, s->n_tokens, s->kv->n_tokens);
        else
            st = kv_seq_reserve(f->cache, s->kv, s->tokens, s->n_tokens, msg, msg_len);
        if (st != DS_OK) break;
    }
    if (st == DS_OK) st = f->backend.forward(f->backend.impl, seqs, n_seqs, logits, msg, msg_len);
    for (int i = 0; i < reserved; i++) {
        kv_seq *seq = seqs[i].kv;
        if (st != DS_OK) {
            if (seq->n_reserved > seq->n_tokens) kv_seq_rollback(f->cache, seq);
            continue;
        }
        int first, end;
        kv_seq_filling(f->cache, seq, &first, &end);
        kv_seq_commit(f->cache, seq);
        for (int b = first; cut && b < end; b++)
            round_trip_block(f, seq, b);
    }
    return st;
}

ds_status kv_forward_step(kv_forward *f, kv_seq *seq, const int32_t *tokens, int n,
                          llama_logits mode, float *logits, char *msg, size_t msg_len) {
    const int T = f->cache->config.block_size, vocab = f->model->config.vocab_size;
    const int cut = f->block_steps;
    ds_status st = DS_OK;
    for (int done = 0; st == DS_OK && done < n;) {
        int len = n - done;
        if (cut && len > T - seq->n_tokens % T) len = T - seq->n_tokens % T;
        llama_step_seq s = {
            .kv = seq,
            .tokens = tokens + done,
            .n_tokens = len,
            .logits = mode == LLAMA_LOGITS_ALL || done + len == n ? mode : LLAMA_LOGITS_NONE};
        st = kv_forward_batch(f, &s, 1,
                              mode == LLAMA_LOGITS_ALL ? logits + (size_t)done * vocab : logits,
                              msg, msg_len);
        done += len;
    }
    return st;
}

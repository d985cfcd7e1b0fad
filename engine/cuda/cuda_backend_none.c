/* engine/cuda/cuda_backend_none.c — cuda_backend.h in a build without CUDA (the default, and
 * CI's): every entry point says so, so callers need no #ifdef to offer --device cuda. */
#include "engine/cuda/cuda_backend.h"

static const char NO_CUDA[] = "this decoserve was built without CUDA (build with --define cuda=1)";

ds_status cuda_backend_create(const llama_model *model, kv_cache *cache,
                              const cuda_backend_options *options, engine_backend *out, char *msg,
                              size_t msg_len) {
    (void)model, (void)cache, (void)options, (void)out;
    return ds_fail(msg, msg_len, DS_EUNSUPPORTED, "%s", NO_CUDA);
}

ds_status cuda_device_memory(int device, size_t *free_bytes, size_t *total_bytes, char *name,
                             size_t name_len, char *msg, size_t msg_len) {
    (void)device, (void)name, (void)name_len;
    *free_bytes = *total_bytes = 0;
    return ds_fail(msg, msg_len, DS_EUNSUPPORTED, "%s", NO_CUDA);
}

ds_status cuda_tp_backend_create(const llama_model *model, kv_cache *cache,
                                 const cuda_backend_options *options, const cuda_tp_config *config,
                                 engine_backend *out, char *msg, size_t msg_len) {
    (void)model, (void)cache, (void)options, (void)config, (void)out;
    return ds_fail(msg, msg_len, DS_EUNSUPPORTED, "%s", NO_CUDA);
}

ds_status cuda_tp_follow_node(const llama_model *model, const cuda_backend_options *options,
                              const cuda_tp_config *config, char *msg, size_t msg_len) {
    (void)model, (void)options, (void)config;
    return ds_fail(msg, msg_len, DS_EUNSUPPORTED, "%s", NO_CUDA);
}

/* server/security.c — TLS material and API keys (see security.h). */
#include "server/security.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/file.h"
#include "common/log.h"

enum { PEM_MAX_BYTES = 1 << 20, KEY_FILE_MAX_BYTES = 1 << 20 };

struct security {
    char *cert, *key, *client_ca; /* PEM text, or NULL without TLS / without a client CA */
    char **api_keys;
    size_t *api_key_lens;
    int n_api_keys;
};

int security_flag(const char *flag, const char *value, security_options *o) {
    if (!strcmp(flag, "--tls-cert"))
        o->tls_cert = value;
    else if (!strcmp(flag, "--tls-key"))
        o->tls_key = value;
    else if (!strcmp(flag, "--tls-client-ca"))
        o->tls_client_ca = value;
    else if (!strcmp(flag, "--api-key"))
        o->api_key = value;
    else if (!strcmp(flag, "--api-key-file"))
        o->api_key_file = value;
    else
        return 0;
    return 1;
}

void security_usage(FILE *out) {
    fprintf(out,
            "  --tls-cert PEM           serve TLS (gRPC and HTTPS) with this certificate chain "
            "(needs --tls-key)\n"
            "  --tls-key PEM            the certificate's private key\n"
            "  --tls-client-ca PEM      mutual TLS: clients must present a certificate this CA "
            "signed\n"
            "  --api-key KEY            calls must send 'authorization: Bearer KEY' (health "
            "checks and /metrics exempt)\n"
            "  --api-key-file PATH      the same, any key of the file (one a line; # comments); "
            "not shown by ps\n");
}

static ds_status read_pem(const char *path, char **out, char *msg, size_t msg_len) {
    size_t len;
    ds_status st = ds_read_file(path, PEM_MAX_BYTES, out, &len, msg, msg_len);
    if (st != DS_OK) return st;
    if (!strstr(*out, "-----BEGIN ")) {
        free(*out);
        *out = NULL;
        return ds_fail(msg, msg_len, DS_EINVAL, "%s: no PEM block (-----BEGIN ...)", path);
    }
    return DS_OK;
}

/* Keys are header tokens: visible ASCII, no spaces. */
static ds_status add_key(security *s, const char *key, size_t len, const char *where, char *msg,
                         size_t msg_len) {
    if (len == 0) return ds_fail(msg, msg_len, DS_EINVAL, "%s: empty API key", where);
    for (size_t i = 0; i < len; i++)
        if (key[i] < 0x21 || key[i] > 0x7e)
            return ds_fail(msg, msg_len, DS_EINVAL,
                           "%s: API key byte %zu is not visible ASCII (0x21-0x7e)", where, i);
    s->api_keys = realloc(s->api_keys, (size_t)(s->n_api_keys + 1) * sizeof *s->api_keys);
    s->api_key_lens =
        realloc(s->api_key_lens, (size_t)(s->n_api_keys + 1) * sizeof *s->api_key_lens);
    DS_ASSERT(s->api_keys != NULL && s->api_key_lens != NULL);
    s->api_keys[s->n_api_keys] = strndup(key, len);
    DS_ASSERT(s->api_keys[s->n_api_keys] != NULL);
    s->api_key_lens[s->n_api_keys++] = len;
    return DS_OK;
}

static ds_status read_key_file(security *s, const char *path, char *msg, size_t msg_len) {
    char *text;
    size_t len;
    ds_status st = ds_read_file(path, KEY_FILE_MAX_BYTES, &text, &len, msg, msg_len);
    if (st != DS_OK) return st;
    int n_before = s->n_api_keys, line = 0;
    for (char *p = text; st == DS_OK && p < text + len; line++) {
        char *end = memchr(p, '\n', (size_t)(text + len - p));
        if (end == NULL) end = text + len;
        char *q = end;
        while (q > p && (q[-1] == '\r' || q[-1] == ' ' || q[-1] == '\t'))
            q--;
        while (p < q && (*p == ' ' || *p == '\t'))
            p++;
        if (p < q && *p != '#') {
            char where[600];
            snprintf(where, sizeof where, "%s:%d", path, line + 1);
            st = add_key(s, p, (size_t)(q - p), where, msg, msg_len);
        }
        p = end + 1;
    }
    free(text);
    if (st == DS_OK && s->n_api_keys == n_before)
        st = ds_fail(msg, msg_len, DS_EINVAL, "%s: no API key in the file", path);
    return st;
}

ds_status security_options_check(const security_options *o, char *msg, size_t msg_len) {
    if (!o->tls_cert != !o->tls_key)
        return ds_fail(msg, msg_len, DS_EINVAL, "--tls-cert and --tls-key: give both or neither");
    if (o->tls_client_ca && !o->tls_cert)
        return ds_fail(msg, msg_len, DS_EINVAL,
                       "--tls-client-ca: needs TLS (--tls-cert and --tls-key)");
    return DS_OK;
}

ds_status security_create(const security_options *o, security **out, char *msg, size_t msg_len) {
    *out = NULL;
    ds_status st = security_options_check(o, msg, msg_len);
    if (st != DS_OK) return st;
    security *s = calloc(1, sizeof *s);
    DS_ASSERT(s != NULL);
    if (o->tls_cert) st = read_pem(o->tls_cert, &s->cert, msg, msg_len);
    if (st == DS_OK && o->tls_key) st = read_pem(o->tls_key, &s->key, msg, msg_len);
    if (st == DS_OK && o->tls_client_ca)
        st = read_pem(o->tls_client_ca, &s->client_ca, msg, msg_len);
    if (st == DS_OK && o->api_key)
        st = add_key(s, o->api_key, strlen(o->api_key), "--api-key", msg, msg_len);
    if (st == DS_OK && o->api_key_file) st = read_key_file(s, o->api_key_file, msg, msg_len);
    if (st != DS_OK) {
        security_destroy(s);
        return st;
    }
    *out = s;
    return DS_OK;
}

void security_destroy(security *s) {
    if (s == NULL) return;
    free(s->cert);
    if (s->key) memset(s->key, 0, strlen(s->key));
    free(s->key);
    free(s->client_ca);
    for (int i = 0; i < s->n_api_keys; i++) {
        memset(s->api_keys[i], 0, s->api_key_lens[i]);
        free(s->api_keys[i]);
    }
    free(s->api_keys);
    free(s->api_key_lens);
    free(s);
}

int security_tls(const security *s) { return s->cert != NULL; }

int security_requires_key(const security *s) { return s->n_api_keys > 0; }

grpc_server_credentials *security_grpc_credentials(const security *s) {
    if (!security_tls(s)) return grpc_insecure_server_credentials_create();
    grpc_ssl_pem_key_cert_pair pair = {.private_key = s->key, .cert_chain = s->cert};
    return grpc_ssl_server_credentials_create_ex(
        s->client_ca, &pair, 1,
        s->client_ca ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                     : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
        NULL);
}

void security_tls_pem(const security *s, const char **cert, const char **key,
                      const char **client_ca) {
    *cert = s->cert, *key = s->key, *client_ca = s->client_ca;
}

/* 0 when a[0..n) equals key, in time that depends on n alone: every byte is read whatever
 * differs, and a length mismatch only sets the result. */
static unsigned key_diff(const char *a, size_t n, const char *key, size_t key_len) {
    unsigned diff = n != key_len;
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char)a[i] ^ (unsigned char)key[i % key_len];
    return diff;
}

int security_authorized(const security *s, const char *authorization, size_t authorization_len) {
    if (s->n_api_keys == 0) return 1;
    static const char scheme[] = "Bearer ";
    const size_t n_scheme = sizeof scheme - 1;
    if (authorization == NULL || authorization_len <= n_scheme ||
        strncasecmp(authorization, scheme, n_scheme) != 0)
        return 0;
    const char *token = authorization + n_scheme;
    size_t n = authorization_len - n_scheme;
    int ok = 0;
    for (int i = 0; i < s->n_api_keys; i++)
        ok |= key_diff(token, n, s->api_keys[i], s->api_key_lens[i]) == 0;
    return ok;
}

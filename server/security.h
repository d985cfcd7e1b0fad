/* server/security.h — who may talk to the server: TLS on the listening port (a certificate chain
 * and key, and with a client CA mutual TLS) and API keys, checked on each call's
 * `authorization: Bearer KEY`. The flags, the files (read once, at start-up) and the key check
 * live here so that every front door (the gRPC server, an HTTP one) shares one spelling and one
 * comparison.
 *
 * Lifetime: security_create reads the files into a security that the caller destroys after the
 * servers using it; the servers borrow it. */
#ifndef DS_SERVER_SECURITY_H
#define DS_SERVER_SECURITY_H

#include <stddef.h>
#include <stdio.h>

#include <grpc/grpc_security.h>

#include "common/status.h"

typedef struct security_options {
    const char *tls_cert;      /* PEM certificate chain file (with tls_key: TLS on), or NULL */
    const char *tls_key;       /* PEM private key file */
    const char *tls_client_ca; /* PEM CA file: clients must present a certificate it signed */
    const char *api_key;       /* a key clients must send, or NULL; it shows in `ps`, so ... */
    const char *api_key_file;  /* ... prefer a file of keys, one a line (blank and # lines
                                  skipped); both may be given, any key then lets a call in */
} security_options;

/* If flag is one of --tls-cert, --tls-key, --tls-client-ca, --api-key, --api-key-file, stores
 * value into o and returns 1; else 0. */
int security_flag(const char *flag, const char *value, security_options *o);

/* Help text for those flags, one per line, indented like the commands' own. */
void security_usage(FILE *out);

typedef struct security security;

/* The combination: a certificate without a key or the reverse, a client CA without TLS:
 * DS_EINVAL naming the flags (a usage error; the files are not read). */
ds_status security_options_check(const security_options *o, char *msg, size_t msg_len);

/* security_options_check, then reads the files: DS_ENOTFOUND / DS_EIO naming the file, DS_EINVAL
 * for a file that holds no PEM block or a key that is empty or not visible ASCII (named by file
 * and line). With no options set: plaintext, no key required. */
ds_status security_create(const security_options *o, security **out, char *msg, size_t msg_len);
void security_destroy(security *s);

/* 1 when the port speaks TLS. */
int security_tls(const security *s);
/* 1 when calls must carry an API key. */
int security_requires_key(const security *s);

/* New gRPC server credentials for the port: TLS (requiring and verifying a client certificate
 * when a client CA is set) or plaintext. The caller releases them
 * (grpc_server_credentials_release) once the port is added. */
grpc_server_credentials *security_grpc_credentials(const security *s);

/* The PEM texts (NUL-terminated, owned by s) for a front door that is not gRPC's: the certificate
 * chain and its key (both NULL without TLS) and the client CA (NULL without mutual TLS). */
void security_tls_pem(const security *s, const char **cert, const char **key,
                      const char **client_ca);

/* Whether a call may proceed: 1 when no key is required, or when authorization (the header's
 * value, authorization_len bytes, not NUL-terminated; NULL when absent) is "Bearer KEY" (the
 * scheme in any case) for a configured KEY. Every key is compared, each in time independent of
 * where it differs, so the answer's timing tells nothing about any key's bytes. */
int security_authorized(const security *s, const char *authorization, size_t authorization_len);

#endif

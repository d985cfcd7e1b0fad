/* engine/tp/bootstrap.c — the rendezvous of bootstrap.h over non-blocking POSIX sockets: every
 * wait is a poll() bounded by the one deadline of the call. */
#include "engine/tp/bootstrap.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum {
    MAGIC = 0x44535450, /* "DSTP" */
    VERSION = 1,
    HELLO_WORDS = 5, /* magic, version, node_rank, n_nodes, world_size */
    HELLO_BYTES = HELLO_WORDS * 4,
    REPLY_BYTES = 8 + TP_BOOTSTRAP_ID_BYTES,
    RETRY_MS = 50,      /* pause between connection attempts while the master is not up */
    PEER_NAME_LEN = 64, /* "[ipv6]:port" */
};

struct tp_bootstrap_server {
    int fd;
};

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int left_ms(int64_t deadline) {
    int64_t left = deadline - now_ms();
    return left > 0 ? (int)left : 0;
}

static void peer_name(const struct sockaddr *sa, char *out) {
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        port = ntohs(in->sin_port);
        snprintf(out, PEER_NAME_LEN, "%s:%d", host, port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        port = ntohs(in6->sin6_port);
        snprintf(out, PEER_NAME_LEN, "[%s]:%d", host, port);
    } else {
        snprintf(out, PEER_NAME_LEN, "?");
    }
}

static int set_nonblocking(int fd) {
    int flags = fcntl(fd, F_GETFL, 0);
    return flags < 0 ? -1 : fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

static ds_status resolve(const tp_bootstrap_config *c, int passive, struct addrinfo **out,
                         char *msg, size_t msg_len) {
    char port[16];
    snprintf(port, sizeof port, "%d", c->master_port);
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = passive ? AI_PASSIVE : 0};
    int rc = getaddrinfo(c->master_addr, port, &hints, out);
    if (rc != 0)
        return ds_fail(msg, msg_len, DS_EINVAL, "master address %s:%d: %s", c->master_addr,
                       c->master_port, gai_strerror(rc));
    return DS_OK;
}

/* Writes all n bytes before the deadline. */
static ds_status send_all(int fd, const uint8_t *buf, size_t n, int64_t deadline, const char *who,
                          char *msg, size_t msg_len) {
    size_t done = 0;
    while (done < n) {
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        int rc = poll(&p, 1, left_ms(deadline));
        if (rc < 0 && errno == EINTR) continue;
        if (rc == 0)
            return ds_fail(msg, msg_len, DS_EUNAVAILABLE, "%s: could not send within the timeout",
                           who);
        ssize_t w = send(fd, buf + done, n - done, MSG_NOSIGNAL);
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) continue;
        if (w < 0) return ds_fail(msg, msg_len, DS_EIO, "%s: send: %s", who, strerror(errno));
        done += (size_t)w;
    }
    return DS_OK;
}

/* One non-blocking read toward n bytes at buf[*got]: 1 when data or nothing yet, 0 at end of
 * stream, -1 on error (errno set). */
static int read_some(int fd, uint8_t *buf, size_t n, size_t *got) {
    ssize_t r = recv(fd, buf + *got, n - *got, 0);
    if (r > 0) *got += (size_t)r;
    if (r < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 1 : -1;
    return r == 0 ? 0 : 1;
}

static void put_u32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}
static uint32_t get_u32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static ds_status check_config(const tp_bootstrap_config *c, char *msg, size_t msg_len) {
    if (c->n_nodes < 1 || c->node_rank < 0 || c->node_rank >= c->n_nodes)
        return ds_fail(msg, msg_len, DS_EINVAL, "node rank %d of %d nodes: outside [0, %d)",
                       c->node_rank, c->n_nodes, c->n_nodes);
    if (c->world_size < c->n_nodes)
        return ds_fail(msg, msg_len, DS_EINVAL, "world size %d: fewer GPUs than the %d nodes",
                       c->world_size, c->n_nodes);
    if (c->master_port < 0 || c->master_port > 65535)
        return ds_fail(msg, msg_len, DS_EINVAL, "master port %d: outside [0, 65535]",
                       c->master_port);
    if (c->timeout_ms <= 0)
        return ds_fail(msg, msg_len, DS_EINVAL, "bootstrap timeout %d ms: must be positive",
                       c->timeout_ms);
    return DS_OK;
}

ds_status tp_bootstrap_listen(const tp_bootstrap_config *c, tp_bootstrap_server **out,
                              int *bound_port, char *msg, size_t msg_len) {
    *out = NULL;
    ds_status st = check_config(c, msg, msg_len);
    if (st != DS_OK) return st;
    struct addrinfo *ai;
    st = resolve(c, 1, &ai, msg, msg_len);
    if (st != DS_OK) return st;
    int fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol), one = 1;
    const char *failed = fd < 0 ? "socket" : NULL;
    /* a restarted master must not wait out TIME_WAIT of its previous run */
    if (!failed && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
        failed = "setsockopt";
    if (!failed && bind(fd, ai->ai_addr, ai->ai_addrlen) < 0) failed = "bind";
    if (!failed && listen(fd, 128) < 0) failed = "listen";
    if (!failed && set_nonblocking(fd) < 0) failed = "fcntl";
    struct sockaddr_storage sa;
    socklen_t len = sizeof sa;
    if (!failed && getsockname(fd, (struct sockaddr *)&sa, &len) < 0) failed = "getsockname";
    freeaddrinfo(ai);
    if (failed) {
        st = ds_fail(msg, msg_len, DS_EIO, "master %s:%d: %s: %s", c->master_addr, c->master_port,
                     failed, strerror(errno));
        if (fd >= 0) close(fd);
        return st;
    }
    tp_bootstrap_server *s = malloc(sizeof *s);
    if (!s) {
        close(fd);
        return ds_fail(msg, msg_len, DS_ENOMEM, "bootstrap: out of memory");
    }
    s->fd = fd;
    *bound_port = ntohs(sa.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&sa)->sin6_port
                                                 : ((struct sockaddr_in *)&sa)->sin_port);
    *out = s;
    return DS_OK;
}

void tp_bootstrap_close(tp_bootstrap_server *s) {
    if (!s) return;
    close(s->fd);
    free(s);
}

/* A connection the master accepted: its hello so far and, once valid, its node rank. */
typedef struct peer {
    int fd;
    char name[PEER_NAME_LEN];
    uint8_t hello[HELLO_BYTES];
    size_t got;
    int node_rank; /* -1 until the hello is complete and valid */
} peer;

static ds_status check_hello(const peer *p, const tp_bootstrap_config *c, const peer *peers,
                             int n_peers, int *node_rank, char *msg, size_t msg_len) {
    const uint32_t magic = get_u32(p->hello), version = get_u32(p->hello + 4);
    const int rank = (int)get_u32(p->hello + 8), n_nodes = (int)get_u32(p->hello + 12),
              world = (int)get_u32(p->hello + 16);
    if (magic != MAGIC)
        return ds_fail(msg, msg_len, DS_ECORRUPT,
                       "peer %s: not a decoserve bootstrap hello (magic 0x%08x)", p->name, magic);
    if (version != VERSION)
        return ds_fail(msg, msg_len, DS_EINVAL, "peer %s: bootstrap version %u, master speaks %d",
                       p->name, version, VERSION);
    if (n_nodes != c->n_nodes || world != c->world_size)
        return ds_fail(msg, msg_len, DS_EINVAL,
                       "peer %s (node rank %d): %d nodes, world size %d; master has %d nodes, "
                       "world size %d",
                       p->name, rank, n_nodes, world, c->n_nodes, c->world_size);
    if (rank < 1 || rank >= c->n_nodes)
        return ds_fail(msg, msg_len, DS_EINVAL, "peer %s: node rank %d outside [1, %d)", p->name,
                       rank, c->n_nodes);
    for (int i = 0; i < n_peers; i++)
        if (peers[i].node_rank == rank)
            return ds_fail(msg, msg_len, DS_EINVAL, "peer %s: node rank %d already joined from %s",
                           p->name, rank, peers[i].name);
    *node_rank = rank;
    return DS_OK;
}

/* Accepts every pending connection into peers (room for max_peers). */
static ds_status accept_all(int listen_fd, peer *peers, int *n_peers, int max_peers, int n_nodes,
                            char *msg, size_t msg_len) {
    for (;;) {
        struct sockaddr_storage sa;
        socklen_t len = sizeof sa;
        int fd = accept(listen_fd, (struct sockaddr *)&sa, &len);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED)
                return DS_OK;
            return ds_fail(msg, msg_len, DS_EIO, "bootstrap accept: %s", strerror(errno));
        }
        peer *p = &peers[*n_peers];
        p->fd = fd;
        p->got = 0;
        p->node_rank = -1;
        peer_name((struct sockaddr *)&sa, p->name);
        (*n_peers)++;
        if (set_nonblocking(fd) < 0)
            return ds_fail(msg, msg_len, DS_EIO, "peer %s: fcntl: %s", p->name, strerror(errno));
        if (*n_peers == max_peers)
            return ds_fail(msg, msg_len, DS_EINVAL,
                           "bootstrap: %d connections for %d nodes; last from %s", *n_peers,
                           n_nodes, p->name);
    }
}

/* The node ranks that have not joined, as "2, 3" into out. */
static void missing_ranks(const peer *peers, int n_peers, int n_nodes, char *out, size_t len) {
    size_t at = 0;
    out[0] = '\0';
    for (int r = 1; r < n_nodes && at + 16 < len; r++) {
        int seen = 0;
        for (int i = 0; i < n_peers; i++)
            seen |= peers[i].node_rank == r;
        if (!seen) at += (size_t)snprintf(out + at, len - at, "%s%d", at ? ", " : "", r);
    }
}

ds_status tp_bootstrap_serve(tp_bootstrap_server *s, const tp_bootstrap_config *c,
                             const tp_bootstrap_id *id, char *msg, size_t msg_len) {
    ds_status st = check_config(c, msg, msg_len);
    if (st != DS_OK) return st;
    const int64_t deadline = now_ms() + c->timeout_ms;
    /* every node once, plus room for strays (a port scanner, a node from another job) that fail
     * the bootstrap with a message instead of filling memory */
    const int max_peers = 2 * c->n_nodes;
    peer *peers = calloc((size_t)max_peers, sizeof *peers);
    struct pollfd *fds = calloc((size_t)max_peers + 1, sizeof *fds);
    if (!peers || !fds) {
        free(peers), free(fds);
        return ds_fail(msg, msg_len, DS_ENOMEM, "bootstrap: out of memory");
    }
    int n_peers = 0, n_joined = 0;
    while (st == DS_OK && n_joined < c->n_nodes - 1) {
        const int n_fds = n_peers + 1;
        fds[0] = (struct pollfd){.fd = s->fd, .events = POLLIN};
        for (int i = 0; i + 1 < n_fds; i++)
            fds[i + 1] =
                (struct pollfd){.fd = peers[i].node_rank < 0 ? peers[i].fd : -1, .events = POLLIN};
        const int rc = poll(fds, (nfds_t)n_fds, left_ms(deadline));
        if (rc < 0 && errno == EINTR) continue;
        if (rc < 0) {
            st = ds_fail(msg, msg_len, DS_EIO, "bootstrap poll: %s", strerror(errno));
            break;
        }
        if (rc == 0) {
            char missing[256];
            missing_ranks(peers, n_peers, c->n_nodes, missing, sizeof missing);
            st = ds_fail(msg, msg_len, DS_EUNAVAILABLE,
                         "bootstrap: node rank(s) %s of %d did not join within %d ms", missing,
                         c->n_nodes, c->timeout_ms);
            for (int i = 0; i < n_peers; i++)
                if (peers[i].node_rank < 0 && strlen(msg) + 80 < msg_len)
                    snprintf(msg + strlen(msg), msg_len - strlen(msg),
                             "; peer %s sent %zu of %d hello bytes", peers[i].name, peers[i].got,
                             HELLO_BYTES);
            break;
        }
        for (int i = 0; st == DS_OK && i + 1 < n_fds; i++) {
            peer *p = &peers[i];
            if (!(fds[i + 1].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            const int r = read_some(p->fd, p->hello, HELLO_BYTES, &p->got);
            if (r < 0)
                st = ds_fail(msg, msg_len, DS_EIO, "peer %s: recv: %s", p->name, strerror(errno));
            else if (r == 0 && p->got < HELLO_BYTES)
                st = ds_fail(msg, msg_len, DS_ECORRUPT,
                             "peer %s: closed the connection after %zu of %d hello bytes", p->name,
                             p->got, HELLO_BYTES);
            else if (p->got == HELLO_BYTES) {
                int rank = -1;
                st = check_hello(p, c, peers, n_peers, &rank, msg, msg_len);
                if (st == DS_OK) p->node_rank = rank, n_joined++;
            }
        }
        if (st == DS_OK && (fds[0].revents & POLLIN))
            st = accept_all(s->fd, peers, &n_peers, max_peers, c->n_nodes, msg, msg_len);
    }
    uint8_t reply[REPLY_BYTES];
    put_u32(reply, MAGIC);
    put_u32(reply + 4, VERSION);
    memcpy(reply + 8, id->bytes, TP_BOOTSTRAP_ID_BYTES);
    for (int i = 0; st == DS_OK && i < n_peers; i++)
        if (peers[i].node_rank > 0)
            st = send_all(peers[i].fd, reply, REPLY_BYTES, deadline, peers[i].name, msg, msg_len);
    for (int i = 0; i < n_peers; i++)
        close(peers[i].fd);
    free(peers), free(fds);
    return st;
}

/* One connection attempt that lasts until connected, refused, or the deadline: the socket, or -1
 * with errno. */
static int try_connect(const struct addrinfo *ai, int64_t deadline) {
    int fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    if (fd < 0) return -1;
    if (set_nonblocking(fd) < 0) goto fail;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) return fd;
    if (errno != EINPROGRESS) goto fail;
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    int rc;
    do
        rc = poll(&p, 1, left_ms(deadline));
    while (rc < 0 && errno == EINTR);
    if (rc == 0) errno = ETIMEDOUT;
    if (rc <= 0) goto fail;
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) goto fail;
    if (err == 0) return fd;
    errno = err;
fail:;
    const int saved = errno;
    close(fd);
    errno = saved;
    return -1;
}

ds_status tp_bootstrap_join(const tp_bootstrap_config *c, tp_bootstrap_id *id, char *msg,
                            size_t msg_len) {
    ds_status st = check_config(c, msg, msg_len);
    if (st != DS_OK) return st;
    if (c->node_rank == 0)
        return ds_fail(msg, msg_len, DS_EINVAL, "node rank 0 is the master: it serves, not joins");
    const int64_t deadline = now_ms() + c->timeout_ms;
    struct addrinfo *ai;
    st = resolve(c, 0, &ai, msg, msg_len);
    if (st != DS_OK) return st;
    char who[PEER_NAME_LEN];
    peer_name(ai->ai_addr, who);
    int fd = -1, last_errno = 0;
    while (fd < 0 && left_ms(deadline) > 0) {
        /* every address the name resolves to ("localhost": ::1 and 127.0.0.1) */
        for (const struct addrinfo *a = ai; fd < 0 && a; a = a->ai_next)
            if ((fd = try_connect(a, deadline)) < 0) last_errno = errno;
        if (fd >= 0) break;
        if (last_errno != ECONNREFUSED && last_errno != ETIMEDOUT && last_errno != ENETUNREACH &&
            last_errno != EHOSTUNREACH && last_errno != ECONNRESET) {
            freeaddrinfo(ai);
            return ds_fail(msg, msg_len, DS_EIO, "master %s: connect: %s", who,
                           strerror(last_errno));
        }
        const int pause = left_ms(deadline) < RETRY_MS ? left_ms(deadline) : RETRY_MS;
        poll(NULL, 0, pause); /* the master may not be listening yet */
    }
    freeaddrinfo(ai);
    if (fd < 0)
        return ds_fail(msg, msg_len, DS_EUNAVAILABLE,
                       "master %s: node rank %d could not connect within %d ms (%s)", who,
                       c->node_rank, c->timeout_ms,
                       last_errno ? strerror(last_errno) : "no attempt");
    uint8_t hello[HELLO_BYTES], reply[REPLY_BYTES];
    const uint32_t words[HELLO_WORDS] = {MAGIC, VERSION, (uint32_t)c->node_rank,
                                         (uint32_t)c->n_nodes, (uint32_t)c->world_size};
    for (int i = 0; i < HELLO_WORDS; i++)
        put_u32(hello + 4 * i, words[i]);
    st = send_all(fd, hello, HELLO_BYTES, deadline, who, msg, msg_len);
    size_t got = 0;
    while (st == DS_OK && got < REPLY_BYTES) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        const int rc = poll(&p, 1, left_ms(deadline));
        if (rc < 0 && errno == EINTR) continue;
        if (rc <= 0) {
            st = rc == 0
                     ? ds_fail(msg, msg_len, DS_EUNAVAILABLE,
                               "master %s: no id for node rank %d within %d ms (%zu of %d "
                               "bytes)",
                               who, c->node_rank, c->timeout_ms, got, REPLY_BYTES)
                     : ds_fail(msg, msg_len, DS_EIO, "master %s: poll: %s", who, strerror(errno));
            break;
        }
        const int r = read_some(fd, reply, REPLY_BYTES, &got);
        if (r < 0)
            st = ds_fail(msg, msg_len, DS_EIO, "master %s: recv: %s", who, strerror(errno));
        else if (r == 0 && got < REPLY_BYTES)
            st = ds_fail(msg, msg_len, DS_ECORRUPT,
                         "master %s: closed the connection after %zu of %d reply bytes (see the "
                         "master's log)",
                         who, got, REPLY_BYTES);
    }
    close(fd);
    if (st != DS_OK) return st;
    if (get_u32(reply) != MAGIC || get_u32(reply + 4) != VERSION)
        return ds_fail(msg, msg_len, DS_ECORRUPT,
                       "master %s: not a decoserve bootstrap reply (magic 0x%08x, version %u)", who,
                       get_u32(reply), get_u32(reply + 4));
    memcpy(id->bytes, reply + 8, TP_BOOTSTRAP_ID_BYTES);
    return DS_OK;
}

/* bootstrap_test — the TCP rendezvous on localhost with threads as nodes: every node gets node
 * 0's id, a late master is waited for, and each failure (a node that never comes, no master, a
 * silent master, a stray or truncated hello, disagreeing or duplicate nodes) is an error naming
 * the peer within the timeout, never a hang. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "engine/tp/bootstrap.h"

enum { MAX_NODES = 4 };

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static tp_bootstrap_config config(int port, int node_rank, int n_nodes, int timeout_ms) {
    return (tp_bootstrap_config){.master_addr = "127.0.0.1",
                                 .master_port = port,
                                 .node_rank = node_rank,
                                 .n_nodes = n_nodes,
                                 .world_size = 2 * n_nodes,
                                 .timeout_ms = timeout_ms};
}

typedef struct node {
    tp_bootstrap_config config;
    int delay_ms; /* before joining */
    pthread_t thread;
    ds_status status;
    tp_bootstrap_id id;
    char msg[256];
} node;

static void *join_main(void *arg) {
    node *n = arg;
    poll(NULL, 0, n->delay_ms);
    n->status = tp_bootstrap_join(&n->config, &n->id, n->msg, sizeof n->msg);
    return NULL;
}
static void start(node *n) { assert_int_equal(pthread_create(&n->thread, NULL, join_main, n), 0); }
static void finish(node *n) { assert_int_equal(pthread_join(n->thread, NULL), 0); }

static tp_bootstrap_server *listen_any(tp_bootstrap_config *c) {
    tp_bootstrap_server *s;
    char msg[256];
    int port;
    assert_int_equal(tp_bootstrap_listen(c, &s, &port, msg, sizeof msg), DS_OK);
    assert_true(port > 0);
    c->master_port = port;
    return s;
}

static tp_bootstrap_id make_id(void) {
    tp_bootstrap_id id;
    for (int i = 0; i < TP_BOOTSTRAP_ID_BYTES; i++)
        id.bytes[i] = (uint8_t)(i * 29 + 7);
    return id;
}

/* A raw client that writes n bytes and closes (a stray or broken peer). */
static void send_raw(int port, const void *bytes, size_t n) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(send(fd, bytes, n, 0), (ssize_t)n);
    close(fd);
}

static void test_nodes_get_the_id(void **state) {
    (void)state;
    tp_bootstrap_config master = config(0, 0, MAX_NODES, 5000);
    tp_bootstrap_server *s = listen_any(&master);
    node nodes[MAX_NODES];
    for (int r = 1; r < MAX_NODES; r++) {
        nodes[r] =
            (node){.config = config(master.master_port, r, MAX_NODES, 5000), .delay_ms = 40 * r};
        if (r == 1) nodes[r].config.master_addr = "localhost"; /* a name, not a number */
        start(&nodes[r]);
    }
    const tp_bootstrap_id id = make_id();
    char msg[256];
    assert_int_equal(tp_bootstrap_serve(s, &master, &id, msg, sizeof msg), DS_OK);
    for (int r = 1; r < MAX_NODES; r++) {
        finish(&nodes[r]);
        assert_int_equal(nodes[r].status, DS_OK);
        assert_memory_equal(nodes[r].id.bytes, id.bytes, TP_BOOTSTRAP_ID_BYTES);
    }
    tp_bootstrap_close(s);
    /* one node: nothing to wait for */
    tp_bootstrap_config alone = config(0, 0, 1, 100);
    s = listen_any(&alone);
    assert_int_equal(tp_bootstrap_serve(s, &alone, &id, msg, sizeof msg), DS_OK);
    tp_bootstrap_close(s);
}

/* A node that starts before the master keeps retrying until the master listens. */
static void test_join_waits_for_master(void **state) {
    (void)state;
    tp_bootstrap_config master = config(0, 0, 2, 5000);
    tp_bootstrap_close(listen_any(&master)); /* a free port, closed: connections are refused */
    node n = {.config = config(master.master_port, 1, 2, 5000)};
    start(&n);
    poll(NULL, 0, 300);
    tp_bootstrap_server *s;
    char msg[256];
    int port;
    assert_int_equal(tp_bootstrap_listen(&master, &s, &port, msg, sizeof msg), DS_OK);
    const tp_bootstrap_id id = make_id();
    assert_int_equal(tp_bootstrap_serve(s, &master, &id, msg, sizeof msg), DS_OK);
    finish(&n);
    assert_int_equal(n.status, DS_OK);
    assert_memory_equal(n.id.bytes, id.bytes, TP_BOOTSTRAP_ID_BYTES);
    tp_bootstrap_close(s);
}

/* Node 2 never comes: the master fails at its deadline naming it, and node 1, which was waiting
 * with a much longer deadline, fails at once because the master closed its connection. */
static void test_missing_node(void **state) {
    (void)state;
    tp_bootstrap_config master = config(0, 0, 3, 300);
    tp_bootstrap_server *s = listen_any(&master);
    node n = {.config = config(master.master_port, 1, 3, 10000)};
    start(&n);
    const tp_bootstrap_id id = make_id();
    char msg[256], port[16];
    const int64_t t0 = now_ms();
    assert_int_equal(tp_bootstrap_serve(s, &master, &id, msg, sizeof msg), DS_EUNAVAILABLE);
    finish(&n);
    const int64_t elapsed = now_ms() - t0;
    print_message("master: %s\nnode 1: %s\n(%lld ms)\n", msg, n.msg, (long long)elapsed);
    assert_non_null(strstr(msg, "node rank(s) 2 of 3 did not join within 300 ms"));
    assert_true(elapsed >= 290 && elapsed < 3000);
    assert_int_equal(n.status, DS_ECORRUPT);
    snprintf(port, sizeof port, ":%d", master.master_port);
    assert_non_null(strstr(n.msg, "master 127.0.0.1"));
    assert_non_null(strstr(n.msg, port));
    tp_bootstrap_close(s);
}

/* No master at all, and a master that accepts but never answers: errors at the deadline. */
static void test_master_missing_or_silent(void **state) {
    (void)state;
    tp_bootstrap_config master = config(0, 0, 2, 300);
    tp_bootstrap_close(listen_any(&master));
    tp_bootstrap_config c = config(master.master_port, 1, 2, 300);
    tp_bootstrap_id id;
    char msg[256];
    int64_t t0 = now_ms();
    assert_int_equal(tp_bootstrap_join(&c, &id, msg, sizeof msg), DS_EUNAVAILABLE);
    int64_t elapsed = now_ms() - t0;
    print_message("%s (%lld ms)\n", msg, (long long)elapsed);
    assert_non_null(strstr(msg, "could not connect within 300 ms"));
    assert_non_null(strstr(msg, "127.0.0.1"));
    assert_true(elapsed >= 290 && elapsed < 3000);

    tp_bootstrap_server *s = listen_any(&master); /* listens (the kernel accepts), never serves */
    c.master_port = master.master_port;
    t0 = now_ms();
    assert_int_equal(tp_bootstrap_join(&c, &id, msg, sizeof msg), DS_EUNAVAILABLE);
    elapsed = now_ms() - t0;
    print_message("%s (%lld ms)\n", msg, (long long)elapsed);
    assert_non_null(strstr(msg, "no id for node rank 1 within 300 ms"));
    assert_true(elapsed >= 290 && elapsed < 3000);
    tp_bootstrap_close(s);
}

/* Strays and broken peers fail the master at once, naming their address. */
static void test_bad_peers(void **state) {
    (void)state;
    const tp_bootstrap_id id = make_id();
    char msg[256];
    tp_bootstrap_config master = config(0, 0, 2, 5000);
    tp_bootstrap_server *s = listen_any(&master);
    send_raw(master.master_port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27);
    assert_int_equal(tp_bootstrap_serve(s, &master, &id, msg, sizeof msg), DS_ECORRUPT);
    print_message("%s\n", msg);
    assert_non_null(strstr(msg, "peer 127.0.0.1:"));
    assert_non_null(strstr(msg, "not a decoserve bootstrap hello"));
    tp_bootstrap_close(s);

    s = listen_any(&master);
    send_raw(master.master_port, "DSTP\0", 5);
    assert_int_equal(tp_bootstrap_serve(s, &master, &id, msg, sizeof msg), DS_ECORRUPT);
    print_message("%s\n", msg);
    assert_non_null(strstr(msg, "closed the connection after 5 of 20 hello bytes"));
    tp_bootstrap_close(s);
}

/* Nodes that disagree with the master, or claim a rank twice. */
static void test_disagreeing_nodes(void **state) {
    (void)state;
    const tp_bootstrap_id id = make_id();
    char msg[256];
    tp_bootstrap_config master = config(0, 0, 2, 5000);
    tp_bootstrap_server *s = listen_any(&master);
    node n = {.config = config(master.master_port, 1, 3, 5000)};
    start(&n);
    assert_int_equal(tp_bootstrap_serve(s, &master, &id, msg, sizeof msg), DS_EINVAL);
    finish(&n);
    print_message("master: %s\nnode: %s\n", msg, n.msg);
    assert_non_null(strstr(msg, "(node rank 1): 3 nodes, world size 6; master has 2 nodes, "
                                "world size 4"));
    assert_int_not_equal(n.status, DS_OK);
    tp_bootstrap_close(s);

    master = config(0, 0, 3, 5000);
    s = listen_any(&master);
    node twins[2];
    for (int i = 0; i < 2; i++) {
        twins[i] = (node){.config = config(master.master_port, 1, 3, 5000), .delay_ms = 50 * i};
        start(&twins[i]);
    }
    assert_int_equal(tp_bootstrap_serve(s, &master, &id, msg, sizeof msg), DS_EINVAL);
    for (int i = 0; i < 2; i++) {
        finish(&twins[i]);
        assert_int_not_equal(twins[i].status, DS_OK);
    }
    print_message("master: %s\n", msg);
    assert_non_null(strstr(msg, "node rank 1 already joined from 127.0.0.1:"));
    tp_bootstrap_close(s);

    tp_bootstrap_config bad = config(1, 0, 2, 100);
    tp_bootstrap_id out;
    assert_int_equal(tp_bootstrap_join(&bad, &out, msg, sizeof msg), DS_EINVAL);
    bad = config(1, 2, 2, 100);
    assert_int_equal(tp_bootstrap_join(&bad, &out, msg, sizeof msg), DS_EINVAL);
    assert_non_null(strstr(msg, "node rank 2 of 2 nodes"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nodes_get_the_id), cmocka_unit_test(test_join_waits_for_master),
        cmocka_unit_test(test_missing_node),     cmocka_unit_test(test_master_missing_or_silent),
        cmocka_unit_test(test_bad_peers),        cmocka_unit_test(test_disagreeing_nodes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

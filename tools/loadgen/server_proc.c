/* tools/loadgen/server_proc.c — spawn (posix_spawnp, safe in a process that has run gRPC's
 * threads), wait for "listening on", stop with SIGTERM. */
#include "tools/loadgen/server_proc.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/file.h"

extern char **environ;

enum { POLL_MS = 50, LOG_TAIL = 600 };

#define LOG_MAX_BYTES ((size_t)1 << 30)

static const char LISTENING[] = "listening on ";

static void sleep_ms(long ms) { nanosleep(&(struct timespec){0, ms * 1000000L}, NULL); }

/* The log so far (malloc'ed, NUL-terminated), or NULL. */
static char *read_log(const char *path) {
    char *text;
    size_t len;
    return ds_read_file(path, LOG_MAX_BYTES, &text, &len, NULL, 0) == DS_OK ? text : NULL;
}

/* "...: <the end of the log>", for error messages. */
static ds_status fail_with_log(const lg_server *s, ds_status st, const char *what, char *msg,
                               size_t msg_len) {
    char *log = read_log(s->log_path);
    size_t n = log ? strlen(log) : 0;
    const char *tail = log ? log + (n > LOG_TAIL ? n - LOG_TAIL : 0) : "(no log)";
    ds_fail(msg, msg_len, st, "server %s; the end of %s:\n%s", what, s->log_path, tail);
    free(log);
    return st;
}

ds_status lg_server_start(char *const argv[], const char *log_path, double timeout_s,
                          lg_server *out, char *msg, size_t msg_len) {
    memset(out, 0, sizeof *out);
    snprintf(out->log_path, sizeof out->log_path, "%s", log_path);
    int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return ds_fail(msg, msg_len, DS_EIO, "%s: cannot create: %s", log_path, strerror(errno));
    posix_spawn_file_actions_t files;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&files);
    posix_spawn_file_actions_addopen(&files, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&files, fd, STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&files, fd, STDERR_FILENO);
    posix_spawn_file_actions_addclose(&files, fd);
    posix_spawnattr_init(&attr);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&attr, 0);
    int err = posix_spawnp(&out->pid, argv[0], &files, &attr, argv, environ);
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&files);
    close(fd);
    if (err != 0) return ds_fail(msg, msg_len, DS_EIO, "cannot run %s: %s", argv[0], strerror(err));

    double give_up = ds_now_s() + timeout_s;
    for (;;) {
        char *log = read_log(log_path);
        const char *at = log ? strstr(log, LISTENING) : NULL;
        if (at) {
            at += sizeof LISTENING - 1;
            size_t n = strcspn(at, " \t\r\n");
            snprintf(out->address, sizeof out->address, "%.*s", (int)n, at);
        }
        free(log);
        if (out->address[0]) return DS_OK;
        int status;
        if (waitpid(out->pid, &status, WNOHANG) == out->pid) {
            out->pid = 0;
            return fail_with_log(out, DS_EIO, "exited before listening", msg, msg_len);
        }
        if (ds_now_s() > give_up) {
            char what[64];
            snprintf(what, sizeof what, "not listening after %.0f s", timeout_s);
            lg_server_stop(out, 0);
            return fail_with_log(out, DS_EUNAVAILABLE, what, msg, msg_len);
        }
        sleep_ms(POLL_MS);
    }
}

int lg_server_stop(lg_server *server, double grace_s) {
    if (server->pid <= 0) return 0;
    pid_t group = server->pid;
    kill(-group, SIGTERM);
    double give_up = ds_now_s() + grace_s;
    int status = 0, reaped = 0;
    while (!(reaped = waitpid(server->pid, &status, WNOHANG) == server->pid) &&
           ds_now_s() < give_up)
        sleep_ms(POLL_MS);
    /* A shell wrapper may end before the server it started: wait for the whole group. */
    while (kill(-group, 0) == 0 && ds_now_s() < give_up)
        sleep_ms(POLL_MS);
    if (kill(-group, 0) == 0) kill(-group, SIGKILL);
    if (!reaped) waitpid(server->pid, &status, 0);
    server->pid = 0;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

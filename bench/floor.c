/* The floor: a minimal supervisor, the physical limit of the machine.
 * floor N SERVICE [ARGS...]: posix_spawn N copies (argv[1] of each is
 * "sI"), restart any that dies at once, reap everything, and on SIGTERM
 * send SIGTERM to all, wait for them, exit 0. One sigwaitinfo loop; a pid
 * is found in an open-addressing table (O(1) per exit, so stop-all and
 * restarts stay linear at N = 10,000). Run as PID 1 of its own namespace.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;
static pid_t *pids;         /* index -> pid (0: none) */
static pid_t *keys;         /* hash table: pid, 0 empty, -1 deleted */
static int *vals;           /* hash table: index */
static size_t cap;
static int n;
static char **args;
static posix_spawnattr_t attr;

static size_t slot(pid_t p) { return ((size_t)p * 2654435761u) & (cap - 1); }

static void put(pid_t p, int i) {
    size_t s = slot(p);
    while (keys[s] > 0) s = (s + 1) & (cap - 1);
    keys[s] = p;
    vals[s] = i;
}

static int take(pid_t p) {
    for (size_t s = slot(p); keys[s] != 0; s = (s + 1) & (cap - 1))
        if (keys[s] == p) { keys[s] = -1; return vals[s]; }
    return -1;
}

static void start(int i) {
    char nm[32];
    snprintf(nm, sizeof nm, "s%d", i);
    args[1] = nm;
    pid_t p;
    if (posix_spawn(&p, args[0], NULL, &attr, args, environ) != 0) p = 0;
    pids[i] = p;
    if (p > 0) put(p, i);
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: floor N SERVICE [ARGS]\n"); return 2; }
    n = atoi(argv[1]);
    args = calloc(argc + 1, sizeof *args);
    args[0] = argv[2];
    for (int i = 3; i < argc; i++) args[i - 1] = argv[i];
    pids = calloc(n + 1, sizeof *pids);
    for (cap = 64; cap < 4 * (size_t)n; cap *= 2) {}
    keys = calloc(cap, sizeof *keys);
    vals = calloc(cap, sizeof *vals);
    sigset_t set, none;
    sigemptyset(&set);
    sigemptyset(&none);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigprocmask(SIG_BLOCK, &set, NULL);
    posix_spawnattr_init(&attr);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
    for (int i = 0; i < n; i++) start(i);
    int stopping = 0, alive = n;
    for (;;) {
        siginfo_t si;
        if (sigwaitinfo(&set, &si) < 0) continue;
        if (si.si_signo == SIGCHLD) {
            pid_t p;
            while ((p = waitpid(-1, NULL, WNOHANG)) > 0) {
                int i = take(p);
                if (i < 0) continue;
                pids[i] = 0;
                if (stopping) alive--;
                else start(i);
            }
            if (stopping && alive <= 0) return 0;
        } else if (!stopping) {
            stopping = 1;
            alive = 0;
            for (int i = 0; i < n; i++)
                if (pids[i] > 0) { kill(pids[i], SIGTERM); alive++; }
            if (alive == 0) return 0;
        }
    }
}

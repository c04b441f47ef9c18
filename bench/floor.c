/* The floor: a minimal supervisor, the physical limit of the machine.
 * floor N SERVICE [ARGS...]: posix_spawn N copies (argv[1] of each is
 * "sI"), restart any that dies at once, reap everything, and on SIGTERM
 * send SIGTERM to all, wait for them, exit 0. One sigwaitinfo loop.
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
static pid_t *pids;
static int n;
static char **args;

static pid_t start(int i) {
    char nm[32];
    snprintf(nm, sizeof nm, "s%d", i);
    args[1] = nm;
    pid_t p;
    posix_spawnattr_t a;
    sigset_t none;
    sigemptyset(&none);
    posix_spawnattr_init(&a);
    posix_spawnattr_setsigmask(&a, &none);
    posix_spawnattr_setflags(&a, POSIX_SPAWN_SETSIGMASK);
    if (posix_spawn(&p, args[0], NULL, &a, args, environ) != 0) p = -1;
    posix_spawnattr_destroy(&a);
    return p;
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: floor N SERVICE [ARGS]\n"); return 2; }
    n = atoi(argv[1]);
    args = calloc(argc + 1, sizeof *args);
    args[0] = argv[2];
    for (int i = 3; i < argc; i++) args[i - 1] = argv[i];
    pids = calloc(n, sizeof *pids);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigprocmask(SIG_BLOCK, &set, NULL);
    for (int i = 0; i < n; i++) pids[i] = start(i);
    int stopping = 0, alive = n;
    for (;;) {
        siginfo_t si;
        if (sigwaitinfo(&set, &si) < 0) continue;
        if (si.si_signo == SIGCHLD) {
            pid_t p;
            while ((p = waitpid(-1, NULL, WNOHANG)) > 0) {
                for (int i = 0; i < n; i++) {
                    if (pids[i] != p) continue;
                    if (stopping) { pids[i] = 0; alive--; }
                    else pids[i] = start(i);
                }
            }
            if (stopping && alive <= 0) return 0;
        } else if (!stopping) {
            stopping = 1;
            for (int i = 0; i < n; i++) if (pids[i] > 0) kill(pids[i], SIGTERM);
        }
    }
}

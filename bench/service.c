/* The benchmark's tiny service: one exec, no shell.
 *
 * Default mode: create MARKDIR/<name>.<hostpid> (content: CLOCK_MONOTONIC
 * ns at start) and pause(); on SIGTERM create MARKDIR/<name>.term and exit 0.
 * Mode "orphans": fork 1000 children that each leave an orphaned grandchild
 * which exits at once, write MARKDIR/<name>.lastfork (monotonic ns), then
 * pause. <name> is argv[1], or the current directory's name (runit and s6
 * run ./run with no arguments).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char name[256];
static const char *dir;

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void mark(const char *suffix, long long value) {
    char path[PATH_MAX], buf[32];
    snprintf(path, sizeof path, "%s/%s.%s", dir, name, suffix);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return;
    int n = snprintf(buf, sizeof buf, "%lld\n", value);
    if (write(fd, buf, n) < 0) {}
    close(fd);
}

/* The outermost pid (NSpid's first field), so the harness can signal us. */
static long host_pid(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long pid = getpid();
    if (!f) return pid;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "NSpid:", 6) == 0) { pid = strtol(line + 6, NULL, 10); break; }
    fclose(f);
    return pid;
}

static void on_term(int sig) {
    (void)sig;
    mark("term", now_ns());
    _exit(0);
}

int main(int argc, char **argv) {
    dir = getenv("MARKDIR");
    if (!dir) dir = "/tmp/bench-marks";
    if (argc > 1) {
        snprintf(name, sizeof name, "%s", argv[1]);
    } else {
        char cwd[PATH_MAX];
        if (!getcwd(cwd, sizeof cwd)) return 1;
        snprintf(name, sizeof name, "%s", basename(cwd));
    }
    signal(SIGTERM, on_term);
    if (argc > 2 && strcmp(argv[2], "orphans") == 0) {
        for (int i = 0; i < 1000; i++) {
            pid_t c = fork();
            if (c == 0) {
                if (fork() == 0) _exit(0); /* grandchild: orphaned, exits */
                _exit(0);
            }
            if (c > 0) waitpid(c, NULL, 0);
        }
        mark("lastfork", now_ns());
    }
    char suffix[32];
    snprintf(suffix, sizeof suffix, "%ld", host_pid());
    mark(suffix, now_ns());
    for (;;) pause();
}

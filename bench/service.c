/* The benchmark's tiny service: one exec, no shell.
 *
 * Default mode: create MARKDIR/<name>.<hostpid> (content: CLOCK_MONOTONIC
 * ns at start) and pause(); on SIGTERM create MARKDIR/<name>.term and exit 0.
 * Mode "orphans" (run as a descendant of PID 1 of a PID namespace with its
 * own /proc, `unshare -fp --mount-proc`): fork 1000 children that each
 * leave an orphaned grandchild which exits at once; write
 * MARKDIR/<name>.firstfork and .lastfork (monotonic ns); then poll
 * /proc/1/task/<*>/children until PID 1 has no zombie child and no
 * grandchild of ours is left, and write MARKDIR/<name>.reaped (monotonic
 * ns; -1 after 30 s). The measurement is taken inside the namespace, so
 * the harness's own wake-up latency is not in it. Then pause.
 * <name> is argv[1], or the current directory's name (runit and s6 run
 * ./run with no arguments). With SERVICE_SAY set it also prints one line
 * on stdout at start.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
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

/* 1 while PID 1 still has a zombie child or a live grandchild of ours
 * (comm "service", not us) among its children. */
static int orphans_left(pid_t self) {
    DIR *d = opendir("/proc/1/task");
    struct dirent *e;
    int left = 0;
    if (!d) return 1;
    while (!left && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[300], buf[1 << 16];
        snprintf(path, sizeof path, "/proc/1/task/%s/children", e->d_name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        ssize_t n = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (n <= 0) continue;
        buf[n] = 0;
        for (char *p = buf, *q; !left && *p; p = q) {
            long pid = strtol(p, &q, 10);
            if (q == p) break;
            if (pid == self) continue;
            char st[512];
            snprintf(path, sizeof path, "/proc/%ld/stat", pid);
            int sf = open(path, O_RDONLY | O_CLOEXEC);
            if (sf < 0) continue; /* reaped meanwhile */
            ssize_t m = read(sf, st, sizeof st - 1);
            close(sf);
            if (m <= 0) continue;
            st[m] = 0;
            char *rp = strrchr(st, ')');
            if (!rp) continue;
            if (rp[2] == 'Z' || strstr(st, "(service)")) left = 1;
        }
    }
    closedir(d);
    return left;
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
    int orphans = 0, daemonize = 0;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "orphans") == 0) orphans = 1;
        if (strcmp(argv[i], "daemon") == 0) daemonize = 1;
    }
    /* `daemon`: for monit, whose start program must return: fork, the
     * parent exits, the child (reparented to PID 1) is the service. */
    if (daemonize) {
        pid_t c = fork();
        if (c < 0) return 1;
        if (c > 0) _exit(0);
        setsid();
    }
    signal(SIGTERM, on_term);
    if (orphans) {
        mark("firstfork", now_ns());
        for (int i = 0; i < 1000; i++) {
            pid_t c = fork();
            if (c == 0) {
                if (fork() == 0) _exit(0); /* grandchild: orphaned, exits */
                _exit(0);
            }
            if (c > 0) waitpid(c, NULL, 0);
        }
        mark("lastfork", now_ns());
        long long deadline = now_ns() + 30000000000LL;
        int timed_out = 0;
        while (orphans_left(getpid())) {
            if (now_ns() > deadline) { timed_out = 1; break; }
            sched_yield();
        }
        if (timed_out) mark("reaped", -1);
        else mark("reaped", now_ns());
    }
    char suffix[32];
    snprintf(suffix, sizeof suffix, "%ld", host_pid());
    /* SERVICE_SAY: one line on stdout at start, as most services print
     * (bench/logging.py: start with per-unit logging on vs inherit). */
    if (getenv("SERVICE_SAY")) {
        char line[300];
        int n = snprintf(line, sizeof line, "%s: started, pid %ld\n", name, host_pid());
        if (write(1, line, n) < 0) {}
    }
    mark(suffix, now_ns());
    for (;;) pause();
}

/* hammer TAG UNIT... : take and release maintenance locks as fast as
 * supctl allows, for the power-cut test (tests/vm.rs).
 *
 * Keys are (unit, holder h0/h1). Operation n works on key n % K: the first
 * time a key is seen it is locked (`on` is valid in any state); after that
 * it alternates off/on. Every `on` carries a unique reason ("TAG op N").
 *
 * On /dev/ttyS0, drained (tcdrain) before going on, so that a line the host
 * has not received cannot be followed by another operation:
 *   TRY n on|off UNIT HOLDER REASON   before the operation is sent
 *   ACK n on|off UNIT HOLDER REASON   after supctl answered success, i.e.
 *                                     after supd said it is on disk
 *   FAIL n ... rc=N                   supctl failed (the host fails the test)
 * So after the last ACK the host sees, at most one operation (the one whose
 * TRY it saw last) may have reached the disk. */
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

extern char **environ;

static int tty = -1;

static void line(const char *s) {
    size_t n = strlen(s);
    /* One write per line: the tty layer does not interleave it with
     * supd's own log lines. */
    if (write(tty, s, n) != (ssize_t)n) _exit(3);
    tcdrain(tty);
}

static int supctl(char *const argv[]) {
    pid_t pid;
    if (posix_spawn(&pid, "/sbin/supctl", NULL, NULL, argv, environ) != 0) return 127;
    int st;
    if (waitpid(pid, &st, 0) < 0) return 126;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    tty = open("/dev/ttyS0", O_WRONLY | O_NOCTTY);
    if (tty < 0) { perror("/dev/ttyS0"); return 2; }
    const char *tag = argv[1];
    int units = argc - 2, keys = units * 2;
    int *state = calloc(keys, sizeof *state); /* 0 unknown, 1 locked, 2 free */
    char buf[512], reason[128];
    line("HAMMER start\n");
    for (long n = 1;; n++) {
        int k = n % keys;
        char *unit = argv[2 + k / 2];
        char holder[8];
        snprintf(holder, sizeof holder, "h%d", k % 2);
        int on = state[k] != 1;
        snprintf(reason, sizeof reason, "%s-op-%ld", tag, n);
        snprintf(buf, sizeof buf, "TRY %ld %s %s %s %s\n", n, on ? "on" : "off", unit, holder,
                 on ? reason : "-");
        line(buf);
        char *on_argv[] = {"supctl", "maintenance", "on", unit, "--reason", reason, "--holder", holder, NULL};
        char *off_argv[] = {"supctl", "maintenance", "off", unit, "--holder", holder, NULL};
        int rc = supctl(on ? on_argv : off_argv);
        if (rc != 0) {
            snprintf(buf, sizeof buf, "FAIL %ld %s %s %s rc=%d\n", n, on ? "on" : "off", unit, holder, rc);
            line(buf);
            return 1;
        }
        state[k] = on ? 1 : 2;
        snprintf(buf, sizeof buf, "ACK %ld %s %s %s %s\n", n, on ? "on" : "off", unit, holder,
                 on ? reason : "-");
        line(buf);
    }
}

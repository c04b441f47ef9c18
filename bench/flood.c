/* A service that floods its stdout at a fixed rate, for the logging
 * benchmark (bench/logging.py).
 *
 * flood RATE_BYTES_PER_S LINE_LEN SECONDS STATSFILE
 *
 * Writes LINE_LEN-byte lines (a counter, padding, '\n') with blocking
 * writes of up to 64 KiB, paced every 10 ms so that RATE bytes go out per
 * second; if the reader (supd) does not keep up, the pipe fills and the
 * writes block, so the achieved rate shows whether it kept up. After
 * SECONDS it writes "bytes seconds" to STATSFILE and pause()s.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: flood RATE LINE_LEN SECONDS STATSFILE\n");
        return 2;
    }
    double rate = atof(argv[1]);
    int len = atoi(argv[2]);
    double secs = atof(argv[3]);
    if (len < 16 || len > 4000) len = 100;
    static char buf[65536];
    long long sent = 0, line = 0;
    double t0 = now(), t;
    while ((t = now()) - t0 < secs) {
        long long due = (long long)((t - t0) * rate) - sent;
        while (due > 0) {
            int n = 0;
            while (n + len <= (int)sizeof buf && n < due) {
                int k = snprintf(buf + n, len, "%012lld ", line++);
                memset(buf + n + k, 'x', len - k - 1);
                buf[n + len - 1] = '\n';
                n += len;
            }
            ssize_t w = write(1, buf, n);
            if (w <= 0) break;
            sent += w;
            due -= w;
        }
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    double el = now() - t0;
    FILE *f = fopen(argv[4], "w");
    if (f) {
        fprintf(f, "%lld %.3f\n", sent, el);
        fclose(f);
    }
    for (;;) pause();
}

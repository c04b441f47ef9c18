/* What a TCP probe's system calls cost beside K other registered
 * descriptors (supd's epoll holds every unit's output pipe, so tokio's
 * epoll_ctl ADD/DEL of a probe socket works in a tree of ~N entries).
 *
 *   probe_epoll K M SEP
 *
 * Registers K pipes in one epoll, then does M probes to 127.0.0.1 ports
 * 22000..22063 (run `listener 22000 64 COUNTFILE` first): socket,
 * connect, epoll_ctl ADD (in the same epoll, or in a second, empty one if
 * SEP is 1), epoll_wait, getsockopt(SO_ERROR), epoll_ctl DEL, close.
 * Prints this process's CPU (user+system) per probe. K is bounded by the
 * hard RLIMIT_NOFILE (two descriptors per pipe).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

static double cpu_us(void) {
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return r.ru_utime.tv_sec * 1e6 + r.ru_utime.tv_usec + r.ru_stime.tv_sec * 1e6 + r.ru_stime.tv_usec;
}

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: probe_epoll K M SEP\n"); return 2; }
    int k = atoi(argv[1]), m = atoi(argv[2]), sep = atoi(argv[3]);
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    int ep = epoll_create1(EPOLL_CLOEXEC), small = epoll_create1(EPOLL_CLOEXEC);
    for (int i = 0; i < k; i++) {
        int p[2];
        if (pipe2(p, O_NONBLOCK | O_CLOEXEC) < 0) { perror("probe_epoll: pipe2 (raise the hard RLIMIT_NOFILE or lower K)"); return 1; }
        struct epoll_event e = {.events = EPOLLIN | EPOLLET, .data.u64 = (unsigned)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &e);
    }
    int use = sep ? small : ep;
    double c0 = cpu_us();
    for (int i = 0; i < m; i++) {
        int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(22000 + i % 64)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (connect(s, (struct sockaddr *)&a, sizeof a) < 0 && errno != EINPROGRESS) { perror("probe_epoll: connect"); return 1; }
        struct epoll_event e = {.events = EPOLLOUT | EPOLLET, .data.u64 = 1ull << 40}, got[8];
        epoll_ctl(use, EPOLL_CTL_ADD, s, &e);
        epoll_wait(use, got, 8, 1000);
        int err;
        socklen_t len = sizeof err;
        getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len);
        epoll_ctl(use, EPOLL_CTL_DEL, s, NULL);
        close(s);
        if (i % 1000 == 999) usleep(100000); /* ~1,000 probes per 100 ms burst, as at 1,000/s */
    }
    printf("K=%d SEP=%d cpu_us_per_probe=%.2f\n", k, sep, (cpu_us() - c0) / m);
    return 0;
}

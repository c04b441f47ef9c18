/* TCP listeners for the probe benchmark: listen on 127.0.0.1 ports
 * [BASE, BASE+K), accept every connection and close it at once (a TCP
 * probe only needs the connect to succeed), and keep the number accepted
 * in COUNTFILE (rewritten every 200 ms). One epoll loop, no threads.
 *
 *   listener BASE K COUNTFILE
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: listener BASE K COUNTFILE\n"); return 2; }
    int base = atoi(argv[1]), k = atoi(argv[2]);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    for (int i = 0; i < k; i++) {
        int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        int one = 1;
        setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(base + i)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (bind(s, (struct sockaddr *)&a, sizeof a) < 0 || listen(s, 4096) < 0) {
            perror("listener: bind/listen");
            return 1;
        }
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = s};
        epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev);
    }
    long long accepted = 0;
    struct timespec last = {0};
    for (;;) {
        struct epoll_event evs[64];
        int n = epoll_wait(ep, evs, 64, 200);
        for (int i = 0; i < n; i++) {
            int c;
            while ((c = accept4(evs[i].data.fd, NULL, NULL, SOCK_CLOEXEC)) >= 0) {
                close(c);
                accepted++;
            }
        }
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((now.tv_sec - last.tv_sec) * 1000 + (now.tv_nsec - last.tv_nsec) / 1000000 >= 200) {
            last = now;
            char tmp[4200];
            snprintf(tmp, sizeof tmp, "%s.tmp", argv[3]);
            FILE *f = fopen(tmp, "w");
            if (f) {
                fprintf(f, "%lld\n", accepted);
                fclose(f);
                rename(tmp, argv[3]);
            }
        }
    }
}

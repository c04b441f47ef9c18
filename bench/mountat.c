/* mountat PID DIR [-u]: enter PID's mount namespace, mount a tmpfs on DIR
 * and print CLOCK_MONOTONIC ns right after mount(2) returns; with -u,
 * unmount DIR there instead (lazily, so a busy mount cannot hang the run). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 3 || argc > 4) return 2;
    char p[64];
    snprintf(p, sizeof p, "/proc/%s/ns/mnt", argv[1]);
    int fd = open(p, O_RDONLY);
    if (fd < 0 || setns(fd, CLONE_NEWNS) < 0) { perror("setns"); return 1; }
    if (argc == 4 && strcmp(argv[3], "-u") == 0) {
        if (umount2(argv[2], MNT_DETACH) < 0) { perror("umount"); return 1; }
        return 0;
    }
    if (mount("bench", argv[2], "tmpfs", 0, NULL) < 0) { perror("mount"); return 1; }
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    printf("%lld\n", (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
    return 0;
}

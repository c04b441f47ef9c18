/* sendraw SOCK [TEXT | -]: connect to a Unix stream socket, send TEXT (or
 * stdin with "-"; nothing at all without an argument, then wait 3 s), print
 * the answer. A test tool for the VM: feeds supd's control socket garbage,
 * huge lines and silent clients while supd is PID 1. */
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    strncpy(a.sun_path, argv[1], sizeof a.sun_path - 1);
    if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof a) < 0) { perror("connect"); return 1; }
    if (argc < 3) { sleep(3); close(s); return 0; }
    if (strcmp(argv[2], "-") == 0) {
        char buf[65536];
        ssize_t n;
        while ((n = read(0, buf, sizeof buf)) > 0)
            if (write(s, buf, n) < 0) break; /* supd may close on us */
    } else if (write(s, argv[2], strlen(argv[2])) < 0) {
        return 1;
    }
    shutdown(s, SHUT_WR);
    char r[4096];
    ssize_t n;
    while ((n = read(s, r, sizeof r)) > 0) fwrite(r, 1, n, stdout);
    printf("\n");
    return 0;
}

/* A closed-loop HTTP/1.1 keep-alive load client for bench/mocks.py part (a): N connections, each
 * sends the next request as soon as the previous response is complete, for D seconds; prints
 * {"ok": N, "other": M}. In C so that one client core saturates a Python server: the servers'
 * CPU per request is then measured at full batching, whatever the server's speed.
 *
 *   rr_client PORT CONNS DURATION_S REQUEST_FILE
 *
 * Responses must carry Content-Length (the mocks' non-stream replies do). Loopback only.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF 262144

typedef struct {
    int fd;
    size_t len;
    int open;
    char buf[BUF];
} conn_t;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static long content_length(const char *head, size_t n) {
    static const char key[] = "\r\ncontent-length:";
    size_t k = sizeof(key) - 1;
    for (size_t i = 0; i + k <= n; i++) {
        if ((head[i] == '\r') && strncasecmp(head + i, key, k) == 0) {
            return strtol(head + i + k, NULL, 10);
        }
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: rr_client PORT CONNS DURATION_S REQUEST_FILE\n");
        return 2;
    }
    int port = atoi(argv[1]), nconns = atoi(argv[2]);
    double duration = atof(argv[3]);
    FILE *f = fopen(argv[4], "rb");
    if (!f) { perror("request file"); return 2; }
    static char req[65536];
    size_t reqlen = fread(req, 1, sizeof(req), f);
    fclose(f);

    conn_t *conns = calloc(nconns, sizeof(conn_t));
    int ep = epoll_create1(0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    for (int i = 0; i < nconns; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0) { perror("connect"); return 3; }
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        conns[i].fd = fd;
        conns[i].open = 1;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (unsigned)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
    long ok = 0, other = 0;
    int open_conns = nconns;
    double end = now_s() + duration;
    for (int i = 0; i < nconns; i++) {
        if (write(conns[i].fd, req, reqlen) != (ssize_t)reqlen) { perror("write"); return 3; }
    }
    struct epoll_event events[256];
    while (open_conns > 0 && now_s() < end + 10.0) {
        int n = epoll_wait(ep, events, 256, 100);
        for (int e = 0; e < n; e++) {
            conn_t *c = &conns[events[e].data.u32];
            if (!c->open) continue;
            ssize_t r = read(c->fd, c->buf + c->len, BUF - c->len);
            if (r <= 0) {
                if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
                close(c->fd); c->open = 0; open_conns--; continue;
            }
            c->len += (size_t)r;
            for (;;) {
                char *head_end = memmem(c->buf, c->len, "\r\n\r\n", 4);
                if (!head_end) break;
                size_t head_len = (size_t)(head_end - c->buf) + 4;
                size_t total = head_len + (size_t)content_length(c->buf, head_len);
                if (c->len < total) break;
                if (c->len >= 12 && memcmp(c->buf + 9, "200", 3) == 0) ok++; else other++;
                memmove(c->buf, c->buf + total, c->len - total);
                c->len -= total;
                if (now_s() < end) {
                    if (write(c->fd, req, reqlen) != (ssize_t)reqlen) { close(c->fd); c->open = 0; open_conns--; break; }
                } else {
                    close(c->fd); c->open = 0; open_conns--; break;
                }
            }
        }
    }
    printf("{\"ok\": %ld, \"other\": %ld}\n", ok, other);
    return 0;
}

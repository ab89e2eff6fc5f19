/* An SSE stream-reading client for bench/mocks.py part (c1): the C twin of the Python
 * ``_sse_client`` (same request bytes, same counting, same histogram, same JSON), cheap enough
 * that one process reads 2,000 concurrent 20 ms streams (100k chunks/s) on a fraction of a core.
 *
 *   sse_client PORT REQUEST_FILE STREAMS ITL_MS SPREAD_S HIST_BIN_MS HIST_BINS
 *
 * Prints "ready", then reads "START_AT LO HI" (CLOCK_MONOTONIC seconds, i.e. Python's
 * time.monotonic()) from stdin, waits until START_AT, and opens STREAMS connections to
 * 127.0.0.1:PORT, stream i at START + SPREAD_S * i / STREAMS, each sending REQUEST_FILE's bytes
 * once (one stream per connection, as the Python client). Every read (one read(2) per readiness,
 * 64 KiB at most) takes CLOCK_MONOTONIC once and counts the content chunks it completes: a
 * ``"delta":{"content":"`` not followed by ``",`` (the role chunk has an empty content), i.e.
 * the Python client's count(TOKEN) - count(EMPTY). The response body is de-chunked (HTTP/1.1
 * chunked transfer encoding) and a few bytes of it are kept across reads, so a marker split
 * across reads (or HTTP chunks) is counted once, in the read that completes it. Per stream, a
 * read with n > 0 chunks: the stream's first such read counts it as started; a later one inside
 * [LO, HI) bins |(now - prev) - ITL| and, for n > 1, n - 1 more at one whole ITL (events that
 * arrive together are a whole ITL early); prev = now. "[DONE]" closes the connection (no new
 * stream is opened on it). Ends when every stream is closed, or at HI + 30 s; prints
 *
 *   {"hist": [...], "khist": [...], "events": N, "reads": N, "started": N,
 *    "window_events": N, "cpu_s": S, "ramp_end": T}
 *
 * "khist" bins the same gaps measured by the kernel's receive timestamps instead (SO_TIMESTAMPNS,
 * read with recvmsg: when the read's last segment reached the socket), which leaves out this
 * process's own wake-up and the order in which it serves the sockets one epoll batch made ready:
 * at 100k chunks/s those delays are the client's, not the server's. Empty if the kernel gave no
 * timestamps.
 *
 * Loopback only.
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
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RBUF 65536
#define HEAD_MAX 16384

static const char TOKEN[] = "\"delta\":{\"content\":\"";
#define TOKEN_LEN (sizeof(TOKEN) - 1)
#define WIN (TOKEN_LEN + 2) /* a marker is decided once the 2 bytes after it are known */
#define TAIL (WIN - 1)
static const char DONE_MARK[] = "[DONE]";
#define DONE_LEN (sizeof(DONE_MARK) - 1)

enum { C_IDLE, C_CONNECTING, C_OPEN, C_CLOSED };
enum { P_HEAD, P_SIZE, P_SIZE_EXT, P_SIZE_LF, P_DATA, P_DATA_CR, P_DATA_LF, P_RAW, P_END };

typedef struct {
    int fd;
    int state;
    int phase;
    int done;           /* "[DONE]" seen */
    size_t need;        /* bytes left in the current HTTP chunk */
    double prev;        /* time of the last read with a content chunk, 0: none yet */
    double kprev;       /* its kernel receive timestamp (CLOCK_REALTIME), 0: none */
    char *head;         /* response head while it is incomplete */
    size_t head_len;
    size_t tail_len;
    char tail[TAIL];    /* the last payload bytes, for markers split across reads */
} conn_t;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Is there a "transfer-encoding: ...chunked" header in the head? */
static int head_is_chunked(const char *h, size_t n) {
    static const char key[] = "\r\ntransfer-encoding:";
    size_t k = sizeof(key) - 1;
    for (size_t i = 0; i + k <= n; i++) {
        if (h[i] == '\r' && strncasecmp(h + i, key, k) == 0) {
            const char *end = memmem(h + i + k, n - i - k, "\r\n", 2);
            size_t len = end ? (size_t)(end - (h + i + k)) : n - i - k;
            for (size_t j = 0; j + 7 <= len; j++)
                if (strncasecmp(h + i + k + j, "chunked", 7) == 0) return 1;
            return 0;
        }
    }
    return 0;
}

/* Count the content markers completed by payload bytes p[0..n) given the connection's tail, and
 * note "[DONE]"; keep the last TAIL bytes. A marker is counted when its WIN bytes are all known. */
static long scan(conn_t *c, const char *p, size_t n) {
    long count = 0;
    if (n == 0) return 0;
    if (c->tail_len) {
        /* markers that start in the tail: look at tail + the first bytes of p */
        char b[2 * TAIL];
        size_t head = n < TAIL ? n : TAIL;
        memcpy(b, c->tail, c->tail_len);
        memcpy(b + c->tail_len, p, head);
        size_t blen = c->tail_len + head;
        for (size_t i = 0; i < c->tail_len; i++) {
            if (i + WIN <= blen && memcmp(b + i, TOKEN, TOKEN_LEN) == 0 &&
                !(b[i + TOKEN_LEN] == '"' && b[i + TOKEN_LEN + 1] == ','))
                count++;
            if (i + DONE_LEN <= blen && memcmp(b + i, DONE_MARK, DONE_LEN) == 0) c->done = 1;
        }
        if (blen < WIN) { /* still too short to decide anything that starts in the tail */
            size_t keep = blen < TAIL ? blen : TAIL;
            memmove(c->tail, b + blen - keep, keep);
            c->tail_len = keep;
            return count;
        }
    }
    /* markers that start in p and fit in it; the ones that do not stay in the tail */
    const char *s = p, *end = p + n;
    while ((size_t)(end - s) >= WIN) {
        const char *m = memmem(s, (size_t)(end - s), TOKEN, TOKEN_LEN);
        if (!m || (size_t)(end - m) < WIN) break;
        if (!(m[TOKEN_LEN] == '"' && m[TOKEN_LEN + 1] == ',')) count++;
        s = m + TOKEN_LEN;
    }
    if (!c->done && memmem(p, n, DONE_MARK, DONE_LEN)) c->done = 1;
    if (n >= TAIL) {
        memcpy(c->tail, end - TAIL, TAIL);
        c->tail_len = TAIL;
    } else { /* the tail keeps its newest TAIL bytes: old ones then p */
        size_t keep_old = c->tail_len + n > TAIL ? TAIL - n : c->tail_len;
        memmove(c->tail, c->tail + c->tail_len - keep_old, keep_old);
        memcpy(c->tail + keep_old, p, n);
        c->tail_len = keep_old + n;
    }
    return count;
}

static int hexval(char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* Feed the bytes of one read through the response parser; the content markers they complete. */
static long feed(conn_t *c, const char *p, size_t n) {
    long count = 0;
    size_t i = 0;
    while (i < n) {
        switch (c->phase) {
        case P_HEAD: {
            if (!c->head) c->head = malloc(HEAD_MAX);
            size_t room = HEAD_MAX - c->head_len, take = n - i < room ? n - i : room;
            memcpy(c->head + c->head_len, p + i, take);
            size_t from = c->head_len > 3 ? c->head_len - 3 : 0;
            c->head_len += take;
            char *e = memmem(c->head + from, c->head_len - from, "\r\n\r\n", 4);
            if (!e) {
                if (c->head_len == HEAD_MAX) return -1; /* no end of head in 16 KiB */
                i += take;
                break;
            }
            size_t hl = (size_t)(e - c->head) + 4;
            c->phase = head_is_chunked(c->head, hl) ? P_SIZE : P_RAW;
            c->need = 0;
            i += take - (c->head_len - hl); /* the bytes after the head are payload */
            free(c->head);
            c->head = NULL;
            c->head_len = 0;
            break;
        }
        case P_SIZE: {
            int v = hexval(p[i]);
            if (v >= 0) {
                c->need = c->need * 16 + (size_t)v;
            } else if (p[i] == '\r') {
                c->phase = P_SIZE_LF;
            } else if (p[i] == ';' || p[i] == ' ' || p[i] == '\t') {
                c->phase = P_SIZE_EXT;
            } else {
                return -1;
            }
            i++;
            break;
        }
        case P_SIZE_EXT:
            if (p[i] == '\r') c->phase = P_SIZE_LF;
            i++;
            break;
        case P_SIZE_LF:
            if (p[i] != '\n') return -1;
            i++;
            c->phase = c->need ? P_DATA : P_END; /* 0: the last chunk */
            break;
        case P_DATA: {
            size_t take = n - i < c->need ? n - i : c->need;
            count += scan(c, p + i, take);
            c->need -= take;
            i += take;
            if (c->need == 0) c->phase = P_DATA_CR;
            break;
        }
        case P_DATA_CR:
            if (p[i] != '\r') return -1;
            i++;
            c->phase = P_DATA_LF;
            break;
        case P_DATA_LF:
            if (p[i] != '\n') return -1;
            i++;
            c->phase = P_SIZE;
            break;
        case P_RAW:
            count += scan(c, p + i, n - i);
            i = n;
            break;
        default: /* P_END: trailers, ignored */
            i = n;
            break;
        }
    }
    return count;
}

int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: sse_client PORT REQUEST_FILE STREAMS ITL_MS SPREAD_S HIST_BIN_MS HIST_BINS\n");
        return 2;
    }
    int port = atoi(argv[1]), nstreams = atoi(argv[3]);
    double itl_ms = atof(argv[4]), spread = atof(argv[5]), bin_ms = atof(argv[6]);
    int bins = atoi(argv[7]);
    double itl_s = itl_ms / 1000.0;
    FILE *f = fopen(argv[2], "rb");
    if (!f) { perror("request file"); return 2; }
    static char req[65536];
    size_t reqlen = fread(req, 1, sizeof(req), f);
    fclose(f);
    if (nstreams < 1 || bins < 1 || bin_ms <= 0) { fprintf(stderr, "bad arguments\n"); return 2; }

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    long *hist = calloc((size_t)bins + 1, sizeof(long));
    long *khist = calloc((size_t)bins + 1, sizeof(long));
    long kstamped = 0;
    conn_t *conns = calloc((size_t)nstreams, sizeof(conn_t));
    int early_bin = (int)(itl_ms / bin_ms);
    if (early_bin > bins) early_bin = bins;
    long events = 0, reads = 0, started = 0, window_events = 0;

    printf("ready\n");
    fflush(stdout);
    double start_at, lo, hi;
    if (scanf("%lf %lf %lf", &start_at, &lo, &hi) != 3) { fprintf(stderr, "no start line\n"); return 2; }
    double wait = start_at - now_s();
    if (wait > 0) {
        struct timespec ts = {(time_t)wait, (long)((wait - (time_t)wait) * 1e9)};
        nanosleep(&ts, NULL);
    }

    int ep = epoll_create1(0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    static char buf[RBUF];
    struct epoll_event evs[512];
    int opened = 0, live = 0;
    double start = now_s(), ramp_end = start, deadline = hi + 30.0;
    for (;;) {
        double now = now_s();
        while (opened < nstreams && start + spread * opened / nstreams <= now) {
            conn_t *c = &conns[opened];
            int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
            if (fd < 0) { perror("socket"); return 3; }
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof(one));
            c->fd = fd;
            c->state = C_CONNECTING;
            c->phase = P_HEAD;
            if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0 && errno != EINPROGRESS) {
                perror("connect");
                return 3;
            }
            struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = (unsigned)opened};
            epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
            opened++;
            live++;
            if (opened == nstreams) ramp_end = now_s();
        }
        if ((opened == nstreams && live == 0) || now >= deadline) break;
        double next = opened < nstreams ? start + spread * opened / nstreams : deadline;
        int timeout = (int)((next - now) * 1000.0) + 1; /* ms, rounded up */
        if (timeout < 0) timeout = 0;
        if (opened == nstreams && timeout > 100) timeout = 100;
        int n = epoll_wait(ep, evs, 512, timeout);
        for (int e = 0; e < n; e++) {
            conn_t *c = &conns[evs[e].data.u32];
            if (c->state == C_CONNECTING) {
                int err = 0;
                socklen_t len = sizeof(err);
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
                if (err || write(c->fd, req, reqlen) != (ssize_t)reqlen) {
                    close(c->fd); c->state = C_CLOSED; live--; continue;
                }
                struct epoll_event ev = {.events = EPOLLIN, .data.u32 = evs[e].data.u32};
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                c->state = C_OPEN;
                continue;
            }
            if (c->state != C_OPEN) continue;
            struct iovec iov = {.iov_base = buf, .iov_len = RBUF};
            char control[CMSG_SPACE(sizeof(struct timespec))];
            struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
                                 .msg_controllen = sizeof(control)};
            ssize_t r = recvmsg(c->fd, &msg, 0);
            double t = now_s();
            double kt = 0.0;
            for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); r > 0 && cm; cm = CMSG_NXTHDR(&msg, cm)) {
                if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_TIMESTAMPNS) {
                    struct timespec ts;
                    memcpy(&ts, CMSG_DATA(cm), sizeof(ts));
                    kt = ts.tv_sec + ts.tv_nsec / 1e9;
                }
            }
            if (r <= 0) {
                if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
                close(c->fd); c->state = C_CLOSED; live--; continue;
            }
            reads++;
            long k = feed(c, buf, (size_t)r);
            if (k < 0) { /* not a response we can follow */
                close(c->fd); c->state = C_CLOSED; live--; continue;
            }
            if (k > 0) {
                events += k;
                int in_window = lo <= t && t < hi;
                if (in_window) window_events += k;
                if (c->prev == 0.0) {
                    started++;
                } else if (in_window) {
                    double err = (t - c->prev) - itl_s;
                    int b = (int)((err < 0 ? -err : err) * 1000.0 / bin_ms);
                    hist[b < bins ? b : bins]++;
                    if (k > 1) hist[early_bin] += k - 1;
                    if (kt > 0.0 && c->kprev > 0.0) {
                        double kerr = (kt - c->kprev) - itl_s;
                        int kb = (int)((kerr < 0 ? -kerr : kerr) * 1000.0 / bin_ms);
                        khist[kb < bins ? kb : bins]++;
                        if (k > 1) khist[early_bin] += k - 1;
                        kstamped++;
                    }
                }
                c->prev = t;
                c->kprev = kt;
            }
            if (c->done || c->phase == P_END) {
                close(c->fd); c->state = C_CLOSED; live--;
            }
        }
    }
    for (int i = 0; i < opened; i++)
        if (conns[i].state == C_OPEN || conns[i].state == C_CONNECTING) close(conns[i].fd);

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    printf("{\"hist\": [");
    for (int i = 0; i <= bins; i++) printf(i ? ", %ld" : "%ld", hist[i]);
    printf("], \"khist\": [");
    for (int i = 0; kstamped && i <= bins; i++) printf(i ? ", %ld" : "%ld", khist[i]);
    printf("], \"events\": %ld, \"reads\": %ld, \"started\": %ld, \"window_events\": %ld, "
           "\"cpu_s\": %.6f, \"ramp_end\": %.6f}\n",
           events, reads, started, window_events, cpu, ramp_end);
    return 0;
}

/*
 * nfq_delay: hold every queued packet for a fixed time, then let it go.
 *
 *     nfq_delay --queue 7 --delay-us 10000
 *
 * The bench runs it inside its network namespace next to one iptables rule,
 *     iptables -t mangle -A PREROUTING -p tcp -j NFQUEUE --queue-num 7
 * so every TCP packet on the namespace's loopback passes through here once (PREROUTING, not OUTPUT: a
 * packet held before the device still counts against its socket's TCP Small Queues; bench/delay.py says
 * more). Held for RTT/2, a request and its answer cost one RTT, like a link with that delay: the kernels
 * of this machine class have no sch_netem, and a userland proxy costs CPU per byte on the two cores the
 * bench measures.
 *
 * Why it is cheap: the kernel keeps the packet; only its metadata (no payload: NFQNL_COPY_META) comes
 * up, and the verdict is one message for a whole run of packets. The delay is the same for every
 * packet, so packets fall due in the order they arrived (their queue ids rise), and one batch verdict
 * "accept every id up to N" releases all that are due. That also releases a packet whose notice was
 * lost to a full socket buffer (ENOBUFS): it leaves with the next packet's batch, never stays stuck.
 * On loopback a packet is a TSO/GSO segment of up to 64 KiB, so a 1 GB/s stream is ~16,000 notices a
 * second: a few percent of one core, spent in the kernel.
 *
 * It prints "ready" once the queue is bound (the bench adds the iptables rule only then: without a
 * listener the kernel drops queued packets), serves until SIGTERM/SIGINT/SIGHUP, releases everything it
 * still holds, and prints one line of statistics to stderr.
 */
#define _GNU_SOURCE
#include <arpa/inet.h> /* before the linux/ headers: glibc defines struct in_addr first */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/netfilter.h>
#include <linux/netlink.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <libnetfilter_queue/libnetfilter_queue.h>

#define RING_SIZE (1u << 18)       /* packets held at once; far above what 2 x 10 ms of traffic needs */
#define KERNEL_QUEUE_MAX 262144u   /* the kernel's own limit on packets waiting for a verdict */
#define SOCKET_BUFFER (16u << 20)  /* room for notices that arrive while we sleep */

struct held {
    uint32_t id;
    uint64_t due_ns;
};

struct delayer {
    struct nfq_handle *handle;
    struct nfq_q_handle *queue;
    uint64_t delay_ns;
    struct held ring[RING_SIZE];
    uint32_t head; /* oldest held packet */
    uint32_t count;
    uint64_t packets;
    uint64_t max_held;
    uint64_t overflows;
    uint64_t lost_notices;
    uint64_t batches;
};

static volatile sig_atomic_t stopping;

static void on_signal(int signum) {
    (void)signum;
    stopping = 1;
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *what) {
    fprintf(stderr, "nfq_delay: %s: %s\n", what, strerror(errno));
    exit(1);
}

/* Release every held packet due by `until` (UINT64_MAX: all of them) with one batch verdict. */
static void release_due(struct delayer *d, uint64_t until) {
    uint32_t last = 0;
    int any = 0;
    while (d->count > 0 && d->ring[d->head].due_ns <= until) {
        last = d->ring[d->head].id;
        any = 1;
        d->head = (d->head + 1) % RING_SIZE;
        d->count--;
    }
    if (any) {
        if (nfq_set_verdict_batch(d->queue, last, NF_ACCEPT) < 0 && errno != ENOENT)
            fprintf(stderr, "nfq_delay: verdict up to %" PRIu32 ": %s\n", last, strerror(errno));
        d->batches++;
    }
}

static int on_packet(struct nfq_q_handle *queue, struct nfgenmsg *message, struct nfq_data *data,
                     void *opaque) {
    struct delayer *d = opaque;
    struct nfqnl_msg_packet_hdr *header = nfq_get_msg_packet_hdr(data);
    (void)queue;
    (void)message;
    if (header == NULL)
        return 0;
    if (d->count == RING_SIZE) { /* never expected: let the oldest go early rather than lose one */
        d->overflows++;
        release_due(d, d->ring[d->head].due_ns);
    }
    uint32_t tail = (d->head + d->count) % RING_SIZE;
    d->ring[tail].id = ntohl(header->packet_id);
    d->ring[tail].due_ns = now_ns() + d->delay_ns;
    d->count++;
    d->packets++;
    if (d->count > d->max_held)
        d->max_held = d->count;
    return 0;
}

static void open_queue(struct delayer *d, uint16_t number) {
    d->handle = nfq_open();
    if (d->handle == NULL)
        die("nfq_open");
    if (nfq_bind_pf(d->handle, AF_INET) < 0)
        die("nfq_bind_pf");
    d->queue = nfq_create_queue(d->handle, number, on_packet, d);
    if (d->queue == NULL)
        die("nfq_create_queue (is another program bound to this queue number?)");
    if (nfq_set_mode(d->queue, NFQNL_COPY_META, 0) < 0)
        die("nfq_set_mode");
    if (nfq_set_queue_maxlen(d->queue, KERNEL_QUEUE_MAX) < 0)
        die("nfq_set_queue_maxlen");
    /* GSO: the kernel hands over a 64 KiB segment whole instead of cutting it up for us. */
    if (nfq_set_queue_flags(d->queue, NFQA_CFG_F_GSO, NFQA_CFG_F_GSO) < 0)
        fprintf(stderr, "nfq_delay: NFQA_CFG_F_GSO not supported: %s\n", strerror(errno));
    nfnl_rcvbufsiz(nfq_nfnlh(d->handle), SOCKET_BUFFER);
    int one = 1;
    setsockopt(nfq_fd(d->handle), SOL_NETLINK, NETLINK_NO_ENOBUFS, &one, sizeof one);
}

/* Take every notice waiting on the socket without blocking. */
static void drain_socket(struct delayer *d, char *buffer, size_t size) {
    int fd = nfq_fd(d->handle);
    for (;;) {
        ssize_t n = recv(fd, buffer, size, MSG_DONTWAIT);
        if (n > 0) {
            nfq_handle_packet(d->handle, buffer, (int)n);
            continue;
        }
        if (n < 0 && errno == ENOBUFS) {
            d->lost_notices++; /* released by a later batch verdict */
            continue;
        }
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            die("recv");
        return;
    }
}

static void serve(struct delayer *d) {
    static char buffer[1 << 16];
    sigset_t blocked, during_wait;
    sigemptyset(&blocked);
    sigaddset(&blocked, SIGTERM);
    sigaddset(&blocked, SIGINT);
    sigaddset(&blocked, SIGHUP);
    /* Signals are only taken inside ppoll, so a stop request never falls between check and wait. */
    sigprocmask(SIG_BLOCK, &blocked, &during_wait);
    sigdelset(&during_wait, SIGTERM);
    sigdelset(&during_wait, SIGINT);
    sigdelset(&during_wait, SIGHUP);
    struct pollfd watch = {.fd = nfq_fd(d->handle), .events = POLLIN};
    while (!stopping) {
        uint64_t now = now_ns();
        release_due(d, now);
        struct timespec wait = {.tv_sec = 1, .tv_nsec = 0};
        if (d->count > 0) {
            uint64_t left = d->ring[d->head].due_ns - now; /* > 0: release_due took all due ones */
            wait.tv_sec = (time_t)(left / 1000000000u);
            wait.tv_nsec = (long)(left % 1000000000u);
        }
        int ready = ppoll(&watch, 1, &wait, &during_wait);
        if (ready < 0 && errno != EINTR)
            die("ppoll");
        if (ready > 0)
            drain_socket(d, buffer, sizeof buffer);
    }
    release_due(d, UINT64_MAX);
}

static void usage(const char *program) {
    fprintf(stderr, "usage: %s --queue N --delay-us MICROSECONDS\n", program);
    exit(2);
}

int main(int argc, char **argv) {
    static struct delayer d; /* static: the ring is 4 MiB */
    long queue_number = -1;
    long long delay_us = -1;
    static const struct option options[] = {
        {"queue", required_argument, NULL, 'q'},
        {"delay-us", required_argument, NULL, 'd'},
        {NULL, 0, NULL, 0},
    };
    int option;
    while ((option = getopt_long(argc, argv, "q:d:", options, NULL)) != -1) {
        if (option == 'q')
            queue_number = strtol(optarg, NULL, 10);
        else if (option == 'd')
            delay_us = strtoll(optarg, NULL, 10);
        else
            usage(argv[0]);
    }
    if (queue_number < 0 || queue_number > 65535 || delay_us < 0)
        usage(argv[0]);
    d.delay_ns = (uint64_t)delay_us * 1000u;
    struct sigaction action = {.sa_handler = on_signal};
    sigemptyset(&action.sa_mask);
    sigaction(SIGTERM, &action, NULL);
    sigaction(SIGINT, &action, NULL);
    sigaction(SIGHUP, &action, NULL);
    open_queue(&d, (uint16_t)queue_number);
    printf("ready\n");
    fflush(stdout);
    serve(&d);
    fprintf(stderr,
            "nfq_delay: %" PRIu64 " packets, at most %" PRIu64 " held, %" PRIu64 " batch verdicts, %" PRIu64
            " lost notices, %" PRIu64 " ring overflows\n",
            d.packets, d.max_held, d.batches, d.lost_notices, d.overflows);
    nfq_destroy_queue(d.queue);
    nfq_close(d.handle);
    return 0;
}

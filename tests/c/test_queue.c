/*
 * test_queue.c - the shared-memory queue: whole messages in order across
 * fork (checksummed), many producers and consumers without loss or
 * duplicates, refusal of oversize messages, a corrupted ring reported
 * (never over-read: ASan watches), peer death and close.
 */
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"
#include "harness.h"
#include "queue.h"
#include "registry.h"
#include "segment.h"

#define SEC HC_NS_PER_SEC

/* A message: producer, sequence number, length, payload, checksum. */
typedef struct msg_head {
    uint32_t mh_producer;
    uint32_t mh_seq;
    uint32_t mh_sum;
} msg_head;

static uint32_t
fnv1a(const uint8_t *p, size_t n)
{
    uint32_t h = 2166136261u;

    while (n--)
        h = (h ^ *p++) * 16777619u;
    return h;
}

/* Fill buf with message seq of producer p; its length varies with seq. */
static size_t
make_msg(uint8_t *buf, uint32_t p, uint32_t seq, size_t max)
{
    size_t len = sizeof(msg_head) + (seq * 7919u + p * 31u) % (max - sizeof(msg_head));
    msg_head h = {p, seq, 0};
    size_t i;

    for (i = sizeof(h); i < len; i++)
        buf[i] = (uint8_t) (seq + i * 13 + p);
    h.mh_sum = fnv1a(buf + sizeof(h), len - sizeof(h));
    memcpy(buf, &h, sizeof(h));
    return len;
}

static msg_head
check_msg(const uint8_t *buf, size_t len)
{
    msg_head h;

    CHECK(len >= sizeof(h));
    memcpy(&h, buf, sizeof(h));
    CHECK(h.mh_sum == fnv1a(buf + sizeof(h), len - sizeof(h)));
    return h;
}

static hc_segment *
new_segment(void)
{
    hc_segment *seg;

    CHECK_ST(hc_segment_anonymous(4 << 20, HC_HUGE_OFF, &seg), HC_OK);
    return seg;
}

static hc_queue_handle *
new_queue(hc_segment *seg, const char *name, uint64_t ring, uint32_t flags)
{
    hc_struct_info info;
    hc_queue_handle *qh;
    bool found;

    CHECK_ST(hc_registry_find_or_alloc(seg, name, strlen(name),
                                       hc_queue_struct_size(ring),
                                       HC_KIND_QUEUE, &info, &found), HC_OK);
    CHECK_ST(hc_queue_open(seg, info.offset, info.size, flags, &qh), HC_OK);
    return qh;
}

static void
done(hc_segment *seg, hc_queue_handle *qh)
{
    hc_queue_detach(qh);
    hc_queue_free(qh);
    CHECK_ST(hc_segment_close(seg), HC_OK);
}

static void
test_round_trip_wraps_and_limits(void)
{
    hc_segment *seg = new_segment();
    hc_queue_handle *qh = new_queue(seg, "q", 256, 0);
    uint8_t in[300], out[300];
    uint64_t max = hc_queue_max_message(256);
    size_t len, i;
    int round;

    CHECK(max == 248);
    for (i = 0; i < sizeof(in); i++)
        in[i] = (uint8_t) i;
    /* Sizes that do not divide the ring, so records wrap at every offset. */
    for (round = 0; round < 500; round++) {
        size_t n = (size_t) (round * 37) % (max + 1);

        CHECK_ST(hc_queue_send(qh, in, n, HC_QUEUE_NOWAIT), HC_OK);
        CHECK_ST(hc_queue_recv(qh, out, sizeof(out), &len, HC_QUEUE_NOWAIT),
                 HC_OK);
        CHECK(len == n && memcmp(in, out, n) == 0);
    }
    CHECK_ST(hc_queue_send(qh, in, max + 1, HC_FOREVER), HC_TOO_LARGE);
    CHECK(strstr(hc_last_detail(), "at most 248") != NULL);
    CHECK_ST(hc_queue_recv(qh, out, sizeof(out), &len, HC_QUEUE_NOWAIT),
             HC_TIMEOUT);
    CHECK_ST(hc_queue_send(qh, in, max, HC_QUEUE_NOWAIT), HC_OK);
    CHECK_ST(hc_queue_send(qh, in, 0, HC_QUEUE_NOWAIT), HC_TIMEOUT);
    CHECK_ST(hc_queue_recv(qh, out, 10, &len, HC_QUEUE_NOWAIT), HC_TOO_LARGE);
    CHECK_ST(hc_queue_recv(qh, out, sizeof(out), &len, HC_QUEUE_NOWAIT),
             HC_OK);
    CHECK(len == max);
    done(seg, qh);
}

/* Batches: many records, one publication. */
static void
test_batches(void)
{
    hc_segment *seg = new_segment();
    hc_queue_handle *qh = new_queue(seg, "q", 4096, 0);
    uint64_t messages, bytes;
    size_t len;
    uint32_t i, v;

    CHECK_ST(hc_queue_put_begin(qh, HC_FOREVER), HC_OK);
    for (i = 0; i < 100; i++)
        CHECK_ST(hc_queue_put_next(qh, &i, sizeof(i)), HC_OK);
    hc_queue_counts(qh, &messages, &bytes);
    CHECK(messages == 0);       /* nothing published before put_end */
    hc_queue_put_end(qh);
    hc_queue_counts(qh, &messages, &bytes);
    CHECK(messages == 100 && bytes == 100 * 16);
    CHECK_ST(hc_queue_get_begin(qh, HC_FOREVER), HC_OK);
    for (i = 0; i < 100; i++) {
        CHECK_ST(hc_queue_get_next(qh, &len), HC_OK);
        CHECK(len == sizeof(v));
        hc_queue_get_copy(qh, &v);
        CHECK(v == i);
    }
    CHECK_ST(hc_queue_get_next(qh, &len), HC_WOULD_BLOCK);
    hc_queue_get_end(qh);
    done(seg, qh);
}

/* One producer process, one consumer process, a small ring: checksums. */
static void
spsc_across_fork(uint32_t flags)
{
    hc_segment *seg = new_segment();
    hc_queue_handle *qh = new_queue(seg, "q", 1024, flags);
    uint8_t buf[512];
    const uint32_t n = 20000;
    uint32_t seq;
    int status;
    pid_t pid = fork();

    if (pid == 0) {
        for (seq = 0; seq < n; seq++) {
            size_t len = make_msg(buf, 1, seq, sizeof(buf));

            if (hc_queue_send(qh, buf, len, hc_deadline_after(10 * SEC))
                != HC_OK)
                _exit(2);
        }
        _exit(0);
    }
    for (seq = 0; seq < n; seq++) {
        size_t len;
        msg_head h;

        CHECK_ST(hc_queue_recv(qh, buf, sizeof(buf), &len,
                               hc_deadline_after(10 * SEC)), HC_OK);
        h = check_msg(buf, len);
        CHECK(h.mh_producer == 1 && h.mh_seq == seq);
    }
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status)
          && WEXITSTATUS(status) == 0);
    done(seg, qh);
}

static void
test_spsc_across_fork(void)
{
    spsc_across_fork(0);
    spsc_across_fork(HC_QUEUE_SINGLE_PRODUCER | HC_QUEUE_SINGLE_CONSUMER);
}

/* 3 producers, 3 consumers: every message exactly once, in order per producer. */
static void
test_many_to_many(void)
{
    enum { P = 3, C = 3, N = 5000 };
    hc_segment *seg = new_segment();
    hc_queue_handle *qh = new_queue(seg, "q", 2048, 0);
    hc_struct_info info;
    _Atomic uint32_t *seen;
    bool found;
    int i, status;

    CHECK_ST(hc_registry_find_or_alloc(seg, "seen", 4, P * N * 4,
                                       HC_KIND_RAW, &info, &found), HC_OK);
    seen = (_Atomic uint32_t *) (seg->sg_base + info.offset);
    for (i = 0; i < P + C; i++) {
        if (fork() != 0)
            continue;
        if (i < P) {
            uint8_t buf[200];

            for (uint32_t seq = 0; seq < N; seq++)
                if (hc_queue_send(qh, buf, make_msg(buf, (uint32_t) i, seq,
                                                    sizeof(buf)),
                                  hc_deadline_after(10 * SEC)) != HC_OK)
                    _exit(2);
            /* A clean leave: else, once every producer is gone before
             * the close, a drained consumer sees them dead (PEER_DIED). */
            (void) hc_queue_detach(qh);
            _exit(0);
        }
        for (;;) {
            uint8_t buf[200];
            uint32_t last[P] = {0};
            size_t len;
            msg_head h;
            hc_status st = hc_queue_recv(qh, buf, sizeof(buf), &len,
                                         hc_deadline_after(10 * SEC));

            if (st == HC_CLOSED)
                _exit(0);
            if (st != HC_OK)
                _exit(3);
            h = check_msg(buf, len);
            if (h.mh_producer >= P || h.mh_seq >= N
                || (h.mh_seq < last[h.mh_producer] && h.mh_seq != 0))
                _exit(4);
            last[h.mh_producer] = h.mh_seq;
            if (atomic_fetch_add(&seen[h.mh_producer * N + h.mh_seq], 1) != 0)
                _exit(5);       /* a duplicate */
        }
    }
    for (i = 0; i < P; i++) {
        CHECK(wait(&status) > 0);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    /* Producers done: close, consumers drain and exit. */
    hc_queue_close(qh);
    for (i = 0; i < C; i++) {
        CHECK(wait(&status) > 0);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    for (i = 0; i < P * N; i++)
        CHECK(atomic_load(&seen[i]) == 1);
    done(seg, qh);
}

/* A corrupted length or position is reported, never followed. */
static void
test_corruption_is_reported(void)
{
    hc_segment *seg = new_segment();
    hc_queue_handle *qh = new_queue(seg, "q", 256, 0);
    hc_queue *q = qh->qh_queue;
    uint8_t out[256];
    uint32_t bad[] = {300, 0xFFFFFFF0u, 100};
    size_t len;
    unsigned i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint64_t at = atomic_load(&q->q_get.qs_bytes) % 256;
        uint32_t word[2];

        CHECK_ST(hc_queue_send(qh, "hello", 5, HC_QUEUE_NOWAIT), HC_OK);
        memcpy(word, q->q_ring + at, sizeof(word));
        word[0] = bad[i];
        if (i < 2)
            word[1] = bad[i] ^ 0x51554555u;     /* a "valid" check word */
        memcpy(q->q_ring + at, word, sizeof(word));
        CHECK_ST(hc_queue_recv(qh, out, sizeof(out), &len, HC_QUEUE_NOWAIT),
                 HC_CORRUPT);
        CHECK(strstr(hc_last_detail(), "message header") != NULL);
        /* Repair by hand so the next round starts clean. */
        atomic_store(&q->q_get.qs_bytes, atomic_load(&q->q_put.qs_bytes));
    }
    atomic_store(&q->q_get.qs_bytes, atomic_load(&q->q_put.qs_bytes) + 8);
    CHECK_ST(hc_queue_recv(qh, out, sizeof(out), &len, HC_QUEUE_NOWAIT),
             HC_CORRUPT);
    CHECK(strstr(hc_last_detail(), "inconsistent") != NULL);
    /* Misaligned: a header would straddle the ring's end. */
    atomic_store(&q->q_get.qs_bytes, atomic_load(&q->q_put.qs_bytes) - 3);
    CHECK_ST(hc_queue_recv(qh, out, sizeof(out), &len, HC_QUEUE_NOWAIT),
             HC_CORRUPT);
    done(seg, qh);
}

/*
 * Fork a child that runs step(qh) (which must succeed), tells us so through
 * a pipe and waits; then SIGKILL it and reap it.
 */
static void
run_then_kill(hc_queue_handle *qh, bool (*step)(hc_queue_handle *))
{
    int pipefd[2], status;
    char c;
    pid_t pid;

    CHECK(pipe(pipefd) == 0);
    pid = fork();
    if (pid == 0) {
        if (!step(qh))
            _exit(2);
        (void) !write(pipefd[1], "x", 1);
        pause();
        _exit(0);
    }
    CHECK(read(pipefd[0], &c, 1) == 1);
    kill(pid, SIGKILL);
    CHECK(waitpid(pid, &status, 0) == pid && WIFSIGNALED(status));
    close(pipefd[0]);
    close(pipefd[1]);
}

static bool
send_last_words(hc_queue_handle *qh)
{
    return hc_queue_send(qh, "last words", 10, HC_FOREVER) == HC_OK;
}

/* A blocked get learns that its only producer was killed. */
static void
test_peer_death(void)
{
    hc_segment *seg = new_segment();
    hc_queue_handle *qh = new_queue(seg, "q", 1024, 0);
    uint8_t buf[64];
    size_t len;

    run_then_kill(qh, send_last_words);
    /* What it sent is still delivered; then the death is reported. */
    CHECK_ST(hc_queue_recv(qh, buf, sizeof(buf), &len, HC_FOREVER), HC_OK);
    CHECK(len == 10);
    CHECK_ST(hc_queue_recv(qh, buf, sizeof(buf), &len, HC_FOREVER),
             HC_PEER_DIED);
    /* A new producer (this process) clears it. */
    CHECK_ST(hc_queue_send(qh, "again", 5, HC_FOREVER), HC_OK);
    CHECK_ST(hc_queue_recv(qh, buf, sizeof(buf), &len, HC_FOREVER), HC_OK);
    CHECK_ST(hc_queue_recv(qh, buf, sizeof(buf), &len,
                           hc_deadline_after(SEC / 50)), HC_TIMEOUT);
    CHECK(atomic_load(&qh->qh_queue->q_get.qs_waiters) == 0);
    done(seg, qh);
}

static bool
write_half_a_batch(hc_queue_handle *qh)
{
    return hc_queue_put_begin(qh, HC_FOREVER) == HC_OK
           && hc_queue_put_next(qh, "unpublished", 11) == HC_OK;
}

/*
 * A producer killed holding the producer lock mid-batch: nothing torn,
 * and the next put takes the side over, with a deadline or without
 * waiting (HC_QUEUE_NOWAIT, which once answered HC_WOULD_BLOCK for good).
 */
static void
producer_killed_mid_batch(uint64_t deadline)
{
    hc_segment *seg = new_segment();
    hc_queue_handle *qh = new_queue(seg, "q", 1024, 0);
    uint8_t buf[64];
    size_t len;

    run_then_kill(qh, write_half_a_batch);
    CHECK_ST(hc_queue_send(qh, "whole", 5, deadline), HC_OK);
    CHECK(qh->qh_cursor[HC_QUEUE_PUT].qc_owner_died);
    CHECK_ST(hc_queue_recv(qh, buf, sizeof(buf), &len, HC_QUEUE_NOWAIT),
             HC_OK);
    CHECK(len == 5 && memcmp(buf, "whole", 5) == 0);
    done(seg, qh);
}

static void
test_producer_killed_mid_batch(void)
{
    producer_killed_mid_batch(hc_deadline_after(SEC));
    producer_killed_mid_batch(HC_QUEUE_NOWAIT);
}

static void
test_close_wakes_and_drains(void)
{
    hc_segment *seg = new_segment();
    hc_queue_handle *qh = new_queue(seg, "q", 1024, 0);
    uint8_t buf[16];
    size_t len;
    int status;
    pid_t pid = fork();

    if (pid == 0) {
        /* Blocks until the close, then drains the one message. */
        hc_status st = hc_queue_recv(qh, buf, sizeof(buf), &len,
                                     hc_deadline_after(10 * SEC));

        if (st != HC_OK)
            _exit(2);
        st = hc_queue_recv(qh, buf, sizeof(buf), &len,
                           hc_deadline_after(10 * SEC));
        _exit(st == HC_CLOSED ? 0 : 3);
    }
    CHECK_ST(hc_queue_send(qh, "m", 1, HC_FOREVER), HC_OK);
    hc_queue_close(qh);
    CHECK_ST(hc_queue_send(qh, "m", 1, HC_FOREVER), HC_CLOSED);
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status)
          && WEXITSTATUS(status) == 0);
    done(seg, qh);
}

static void
test_single_producer_is_enforced(void)
{
    hc_segment *seg = new_segment();
    hc_queue_handle *qh = new_queue(seg, "q", 1024, HC_QUEUE_SINGLE_PRODUCER);
    int status;
    pid_t pid;

    CHECK_ST(hc_queue_send(qh, "a", 1, HC_FOREVER), HC_OK);
    pid = fork();
    if (pid == 0)
        _exit(hc_queue_send(qh, "b", 1, HC_FOREVER) == HC_BUSY ? 0 : 2);
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status)
          && WEXITSTATUS(status) == 0);
    /* After a detach another process may take the side over. */
    hc_queue_detach(qh);
    pid = fork();
    if (pid == 0)
        _exit(hc_queue_send(qh, "c", 1, HC_FOREVER) == HC_OK ? 0 : 2);
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status)
          && WEXITSTATUS(status) == 0);
    /* ...and after its exit (a death, to the queue), so may we. */
    CHECK_ST(hc_queue_send(qh, "d", 1, HC_FOREVER), HC_OK);
    done(seg, qh);
}

/* The batch thread of test_detach_leaves_a_running_batch_its_side. */
typedef struct batch_thread {
    hc_queue_handle *bt_qh;
    pthread_barrier_t bt_in_batch, bt_end_it;
} batch_thread;

static void *
run_batch(void *arg)
{
    batch_thread *bt = arg;

    CHECK_ST(hc_queue_put_begin(bt->bt_qh, HC_FOREVER), HC_OK);
    CHECK_ST(hc_queue_put_next(bt->bt_qh, "in batch", 8), HC_OK);
    pthread_barrier_wait(&bt->bt_in_batch);
    pthread_barrier_wait(&bt->bt_end_it);
    hc_queue_put_end(bt->bt_qh);
    return NULL;
}

/* Can another process put now?  Its status, HC_BUSY if the side is taken. */
static hc_status
put_from_child(hc_queue_handle *qh)
{
    int status;
    pid_t pid = fork();

    if (pid == 0)
        _exit((int) hc_queue_send(qh, "x", 1, hc_deadline_after(HC_NS_PER_SEC)));
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status));
    return (hc_status) WEXITSTATUS(status);
}

/*
 * A detach while another thread of the process is in a batch on a single
 * side must not give that side up: a newcomer would join it and write
 * beside the batch (issue 9).  Detach says HC_BUSY and changes nothing;
 * once the batch ends, it gives the side up.
 */
static void
test_detach_leaves_a_running_batch_its_side(void)
{
    hc_segment *seg = new_segment();
    hc_queue_handle *qh = new_queue(seg, "q", 1024, HC_QUEUE_SINGLE_PRODUCER);
    batch_thread bt;
    pthread_t thread;
    uint8_t buf[16];
    size_t len;

    bt.bt_qh = qh;
    pthread_barrier_init(&bt.bt_in_batch, NULL, 2);
    pthread_barrier_init(&bt.bt_end_it, NULL, 2);
    CHECK(pthread_create(&thread, NULL, run_batch, &bt) == 0);
    pthread_barrier_wait(&bt.bt_in_batch);
    CHECK_ST(hc_queue_detach(qh), HC_BUSY);
    CHECK(strstr(hc_last_detail(), "put batch") != NULL);
    CHECK_ST(put_from_child(qh), HC_BUSY);
    pthread_barrier_wait(&bt.bt_end_it);
    CHECK(pthread_join(thread, NULL) == 0);
    CHECK_ST(hc_queue_detach(qh), HC_OK);
    CHECK_ST(put_from_child(qh), HC_OK);
    CHECK_ST(hc_queue_recv(qh, buf, sizeof(buf), &len, HC_FOREVER), HC_OK);
    CHECK(len == 8 && memcmp(buf, "in batch", 8) == 0);
    CHECK_ST(hc_queue_recv(qh, buf, sizeof(buf), &len, HC_FOREVER), HC_OK);
    CHECK(len == 1 && buf[0] == 'x');
    pthread_barrier_destroy(&bt.bt_in_batch);
    pthread_barrier_destroy(&bt.bt_end_it);
    done(seg, qh);
}

int
main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);   /* forked children must not repeat it */
    printf("test_queue\n");
    TEST(test_round_trip_wraps_and_limits);
    TEST(test_batches);
    TEST(test_spsc_across_fork);
    TEST(test_many_to_many);
    TEST(test_corruption_is_reported);
    TEST(test_peer_death);
    TEST(test_producer_killed_mid_batch);
    TEST(test_close_wakes_and_drains);
    TEST(test_single_producer_is_enforced);
    TEST(test_detach_leaves_a_running_batch_its_side);
    return 0;
}

/* cthreads: the machine's own two-thread scaling, the control for run_all.py's two-thread figure.
 *
 * T threads each run one loop on their own state for SECS seconds, sharing nothing, and the
 * pairs per second of all threads together are printed. The loops:
 *   iommu  (default) cfloor.c's IOMMU loop: an IOVA from a per-CPU magazine, a 4-level radix
 *          install of one 4 KiB page, then the clear and the IOVA back to the magazine; 64
 *          mappings in flight. cfloor.c keeps its state in globals (one loop per process), so
 *          the loop is restated here with its state in a struct per thread.
 *   direct what a dma-direct batch map + unmap of 4096 pairs minimally does, in the batch
 *          call's shape: the span check over the phys array (phys + size - 1 must not wrap),
 *          then per element phys_to_dma (the offset add), dma_capable (the mask check) and the
 *          store into the thread's result array; then per element dma_to_phys (the offset
 *          subtract) and is_swiotlb_buffer (the pool-bounds check). 4096-element arrays per
 *          thread, as the two-thread benchmark's batch calls use.
 *
 * Usage: cthreads T SECS [iommu|direct]   Build: cc -O2 -pthread -o cthreads cthreads.c */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LEVELS 4
#define NPOOL 4096
#define MAG 128
#define LIVE 64

typedef struct { uint64_t e[512]; } table_t;
typedef struct { int n; uint64_t pfns[MAG]; } mag_t;
typedef struct {
    table_t *pool; size_t used;
    mag_t loaded, prev; uint64_t next_pfn;
    double secs; uint64_t pairs;
    uint64_t *phys, *dma;               /* direct: this thread's phys and result arrays */
    char pad[64];                       /* keep two threads' results off one cache line */
} state_t;

static double now(void) { struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts); return ts.tv_sec + ts.tv_nsec * 1e-9; }

static table_t *new_table(state_t *s) {
    if (s->used == NPOOL) { fprintf(stderr, "pool\n"); exit(1); }
    memset(&s->pool[s->used], 0, sizeof(table_t));
    return &s->pool[s->used++];
}

static int map4k(state_t *s, table_t *root, uint64_t iova, uint64_t phys) {
    table_t *t = root;
    for (int lvl = LEVELS - 1; lvl > 0; lvl--) {
        unsigned idx = (iova >> (12 + 9 * lvl)) & 511;
        uint64_t e = t->e[idx];
        if (!e) { table_t *n = new_table(s); e = ((uint64_t)(n - s->pool) << 12) | 3; t->e[idx] = e; }
        t = &s->pool[(e & 0x000ffffffffff000ull) >> 12];
    }
    unsigned idx = (iova >> 12) & 511;
    if (t->e[idx]) return -17;
    t->e[idx] = (phys & 0x000ffffffffff000ull) | 3;
    return 0;
}

static uint64_t unmap4k(state_t *s, table_t *root, uint64_t iova) {
    table_t *t = root;
    for (int lvl = LEVELS - 1; lvl > 0; lvl--) {
        uint64_t e = t->e[(iova >> (12 + 9 * lvl)) & 511];
        if (!e) return 0;
        t = &s->pool[(e & 0x000ffffffffff000ull) >> 12];
    }
    unsigned idx = (iova >> 12) & 511; uint64_t old = t->e[idx]; t->e[idx] = 0; return old;
}

static uint64_t iova_alloc(state_t *s) {
    if (s->loaded.n) return s->loaded.pfns[--s->loaded.n];
    if (s->prev.n) { mag_t t = s->loaded; s->loaded = s->prev; s->prev = t; return s->loaded.pfns[--s->loaded.n]; }
    return s->next_pfn--;
}

static void iova_free(state_t *s, uint64_t pfn) {
    if (s->loaded.n < MAG) { s->loaded.pfns[s->loaded.n++] = pfn; return; }
    if (s->prev.n < MAG) { mag_t t = s->loaded; s->loaded = s->prev; s->prev = t; s->loaded.pfns[s->loaded.n++] = pfn; return; }
    s->prev.n = 0; s->loaded.pfns[0] = pfn;
}

static void *run(void *arg) {
    state_t *s = arg;
    uint64_t iovas[LIVE], pairs = 0;
    volatile uint64_t sink = 0;
    s->pool = aligned_alloc(4096, NPOOL * sizeof(table_t));
    s->next_pfn = 0xfffff;
    table_t *root = new_table(s);
    for (long i = 0; i < LIVE; i++) { iovas[i] = iova_alloc(s) << 12; map4k(s, root, iovas[i], (uint64_t)i << 12); }
    double end = now() + s->secs;
    for (uint64_t i = 0;; i++) {
        long k = i % LIVE;
        sink += unmap4k(s, root, iovas[k]); iova_free(s, iovas[k] >> 12);
        iovas[k] = iova_alloc(s) << 12;
        if (map4k(s, root, iovas[k], i << 12)) { fprintf(stderr, "map\n"); exit(1); }
        pairs++;
        if ((i & 0xffff) == 0 && now() >= end) break;
    }
    s->pairs = pairs;
    free(s->pool);
    return NULL;
}

#define CHUNK 4096
#define PAGE 4096ull

static void *run_direct(void *arg) {
    state_t *s = arg;
    const uint64_t off = 0x80000000ull, mask = (1ull << 40) - 1;      /* the device's bus offset, mask */
    const uint64_t pool_lo = 0x40000000ull, pool_hi = pool_lo + (64ull << 20);   /* the swiotlb pool */
    uint64_t pairs = 0, bad = 0;
    volatile uint64_t sink = 0;
    s->phys = aligned_alloc(64, CHUNK * sizeof(uint64_t));
    s->dma = aligned_alloc(64, CHUNK * sizeof(uint64_t));
    for (long i = 0; i < CHUNK; i++) s->phys[i] = (16ull << 20) + (uint64_t)i * PAGE;
    double end = now() + s->secs;
    for (uint64_t r = 0;; r++) {
        uint64_t top = 0;                                   /* the batch's span check */
        for (long i = 0; i < CHUNK; i++) top = s->phys[i] > top ? s->phys[i] : top;
        if (top > UINT64_MAX - (PAGE - 1)) { fprintf(stderr, "span\n"); exit(1); }
        for (long i = 0; i < CHUNK; i++) {                  /* map: phys_to_dma, dma_capable, store */
            uint64_t d = s->phys[i] + off;
            if (d + PAGE - 1 > mask || d + PAGE - 1 < d) { bad++; d = UINT64_MAX; }
            s->dma[i] = d;
        }
        for (long i = 0; i < CHUNK; i++) {                  /* unmap: dma_to_phys, is_swiotlb_buffer */
            uint64_t p = s->dma[i] - off;
            bad += p >= pool_lo && p < pool_hi;
        }
        pairs += CHUNK;
        if ((r & 63) == 0 && now() >= end) break;
    }
    sink += bad;
    s->pairs = pairs;
    free(s->phys);
    free(s->dma);
    return NULL;
}

int main(int argc, char **argv) {
    int nt = argc > 1 ? atoi(argv[1]) : 1;
    double secs = argc > 2 ? atof(argv[2]) : 0.5;
    int direct = argc > 3 && strcmp(argv[3], "direct") == 0;
    if (nt < 1 || nt > 64 || (argc > 3 && !direct && strcmp(argv[3], "iommu") != 0)) return 2;
    pthread_t th[64];
    state_t *st = calloc(nt, sizeof(state_t));
    double t0 = now();
    for (int i = 0; i < nt; i++) { st[i].secs = secs; pthread_create(&th[i], NULL, direct ? run_direct : run, &st[i]); }
    uint64_t total = 0;
    for (int i = 0; i < nt; i++) { pthread_join(th[i], NULL); total += st[i].pairs; }
    double wall = now() - t0;
    printf("threads %d: %.0f pairs/s\n", nt, total / wall);
    return 0;
}

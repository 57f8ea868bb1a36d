/* Vendored copy of the team-shared ../shared/cfloor.c (issue 10, written for dmaphys by the
 * project lead), so that a fresh clone can run benchmarks/run_all.py. run_all.py prefers
 * ../shared/cfloor.c when it exists and falls back to this file; keep the two identical. */
/* cfloor: the C floor for dmaphys's hot paths on this machine.
 * A plain C loop doing the minimum work of each simulated operation, so that the package's
 * batch paths can be held against it as a ratio measured in the same run.
 *   iommu  : IOVA from a per-CPU magazine (rcache hit path), 4-level radix map of one 4 KiB page
 *            (x86-style PTEs, tables allocated on demand), then unmap + return IOVA to magazine.
 *   direct : phys -> dma (offset add + mask check), no state.
 *   bounce : 4 KiB memcpy into a slot and back (swiotlb TO_DEVICE map + FROM_DEVICE unmap).
 * Usage: cfloor N   -> prints ns/pair for each. Build: cc -O2 -o cfloor cfloor.c */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LEVELS 4
#define PTE_R 1ull
#define PTE_W 2ull
#define ADDR_MASK 0x000ffffffffff000ull

typedef struct { uint64_t e[512]; } table_t;
static table_t *pool; static size_t npool, used;
static table_t *new_table(void) { if (used == npool) { fprintf(stderr, "pool\n"); exit(1); } memset(&pool[used], 0, sizeof(table_t)); return &pool[used++]; }
static uint64_t tphys(table_t *t) { return (uint64_t)(t - pool) << 12; }
static table_t *tvirt(uint64_t p) { return &pool[(p & ADDR_MASK) >> 12]; }

static int map4k(table_t *root, uint64_t iova, uint64_t phys, uint64_t prot) {
    table_t *t = root;
    for (int lvl = LEVELS - 1; lvl > 0; lvl--) {
        unsigned idx = (iova >> (12 + 9 * lvl)) & 511;
        uint64_t e = t->e[idx];
        if (!e) { table_t *n = new_table(); e = tphys(n) | PTE_R | PTE_W; t->e[idx] = e; }
        t = tvirt(e);
    }
    unsigned idx = (iova >> 12) & 511;
    if (t->e[idx]) return -17;
    t->e[idx] = (phys & ADDR_MASK) | prot;
    return 0;
}
static uint64_t unmap4k(table_t *root, uint64_t iova) {
    table_t *t = root;
    for (int lvl = LEVELS - 1; lvl > 0; lvl--) {
        uint64_t e = t->e[(iova >> (12 + 9 * lvl)) & 511];
        if (!e) return 0;
        t = tvirt(e);
    }
    unsigned idx = (iova >> 12) & 511; uint64_t old = t->e[idx]; t->e[idx] = 0; return old;
}

#define MAG 128
typedef struct { int n; uint64_t pfns[MAG]; } mag_t;
static mag_t loaded, prev; static uint64_t next_pfn = 0xfffff;

static uint64_t iova_alloc(void) {
    if (loaded.n) return loaded.pfns[--loaded.n];
    if (prev.n) { mag_t t = loaded; loaded = prev; prev = t; return loaded.pfns[--loaded.n]; }
    return next_pfn--;   /* slow path stand-in: fresh top-down pfn */
}
static void iova_free(uint64_t pfn) {
    if (loaded.n < MAG) { loaded.pfns[loaded.n++] = pfn; return; }
    if (prev.n < MAG) { mag_t t = loaded; loaded = prev; prev = t; loaded.pfns[loaded.n++] = pfn; return; }
    prev.n = 0; loaded.pfns[0] = pfn; /* depot stand-in */
}

static double now(void) { struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts); return ts.tv_sec * 1e9 + ts.tv_nsec; }

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 10000000;
    long live = argc > 2 ? atol(argv[2]) : 64;
    npool = 1 << 16; pool = aligned_alloc(4096, npool * sizeof(table_t));
    table_t *root = new_table();
    uint64_t *iovas = malloc(sizeof(uint64_t) * live);
    volatile uint64_t sink = 0;
    /* iommu: keep `live` mappings in flight, FIFO, like a queue of outstanding I/Os */
    for (long i = 0; i < live; i++) { iovas[i] = iova_alloc() << 12; map4k(root, iovas[i], (uint64_t)i << 12, PTE_R | PTE_W); }
    double t0 = now();
    for (long i = 0; i < n; i++) {
        long s = i % live;
        sink += unmap4k(root, iovas[s]); iova_free(iovas[s] >> 12);
        iovas[s] = iova_alloc() << 12;
        if (map4k(root, iovas[s], (uint64_t)i << 12, PTE_R | PTE_W)) { fprintf(stderr, "map\n"); return 1; }
    }
    double t1 = now();
    printf("iommu  map+unmap 4KiB: %.1f ns/pair (live=%ld)\n", (t1 - t0) / n, live);
    /* direct */
    uint64_t off = 0x80000000ull, mask = (1ull << 40) - 1; long bad = 0;
    t0 = now();
    for (long i = 0; i < n; i++) { uint64_t d = ((uint64_t)i << 12) + off; if (d + 4095 > mask) bad++; sink += d; }
    t1 = now();
    printf("direct map+unmap 4KiB: %.2f ns/pair (bad=%ld)\n", (t1 - t0) / n, bad);
    /* bounce */
    long nb = n / 10 > 0 ? n / 10 : 1;
    char *orig = aligned_alloc(4096, 64 << 20), *slots = aligned_alloc(4096, 64 << 20);
    memset(orig, 1, 64 << 20); memset(slots, 2, 64 << 20);
    t0 = now();
    for (long i = 0; i < nb; i++) {
        size_t o = ((size_t)i * 4096) % (64 << 20);
        memcpy(slots + o, orig + o, 4096); memcpy(orig + o, slots + o, 4096);
    }
    t1 = now();
    printf("bounce map+unmap 4KiB: %.1f ns/pair\n", (t1 - t0) / nb);
    return (int)(sink & 0);
}

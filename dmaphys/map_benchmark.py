"""A twin of the kernel's DMA map benchmark (kernel/dma/map_benchmark.c and
tools/testing/selftests/dma/dma_map_benchmark.c), running on a simulated machine.

``map_benchmark(dev, ...)`` mirrors the DMA_MAP_BENCHMARK ioctl: the same argument checks in
the same order (each a -EINVAL with the kernel's pr_err text), the same loop (memset 0x66
unless FROM_DEVICE, time dma_map_single, "transmit" for dma_trans_ns, time dma_unmap_single),
the same statistics in 100 ns units (truncating division, integer mean, integer square root of
the variance). Differences, by necessity: the "threads" are simulated CPUs that take turns in
one host thread (each iteration of thread i runs with ``m.cpu = i % m.cpus``, so per-CPU
state — swiotlb areas, IOVA rcaches, flush queues — is exercised as on a real machine), the
transmit delay advances the virtual clock (firing flush-queue timers) instead of spinning, and
latencies are host nanoseconds of the simulator.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

from .constants import DMA_BIT_MASK, DMA_FROM_DEVICE, EINVAL, ENOMEM, PAGE_SIZE

# include/linux/map_benchmark.h
DMA_MAP_MAX_THREADS = 1024
DMA_MAP_MAX_SECONDS = 300
DMA_MAP_MAX_TRANS_DELAY = 10 * 1000 * 1000
DMA_MAP_BIDIRECTIONAL = 0
DMA_MAP_TO_DEVICE = 1
DMA_MAP_FROM_DEVICE = 2
NUMA_NO_NODE = -1
DIR_NAMES = ("BIDIRECTIONAL", "TO_DEVICE", "FROM_DEVICE")


@dataclass
class MapBenchmark:
    """struct map_benchmark: inputs and the four result fields (100 ns units).

    Mirrors struct map_benchmark (include/linux/map_benchmark.h), plus exact totals for reports. A
    dataclass: constructing one raises TypeError for an unknown field and checks no value
    (map_benchmark() does).
    """

    threads: int = 1
    seconds: int = 20
    node: int = NUMA_NO_NODE
    dma_bits: int = 32
    dma_dir: int = DMA_MAP_BIDIRECTIONAL
    dma_trans_ns: int = 0
    granule: int = 1
    avg_map_100ns: int = 0
    map_stddev: int = 0
    avg_unmap_100ns: int = 0
    unmap_stddev: int = 0
    # beyond the kernel's struct: exact figures for reports
    loops: int = 0
    sum_map_ns: int = 0
    sum_unmap_ns: int = 0

    def as_dict(self) -> dict:
        """Simulator-only: the fields as a dict, plus mean_map_ns / mean_unmap_ns once loops ran.

        Returns the dict. Raises nothing.
        """
        d = asdict(self)
        if self.loops:
            d["mean_map_ns"] = self.sum_map_ns / self.loops
            d["mean_unmap_ns"] = self.sum_unmap_ns / self.loops
        return d


class MapBenchmarkError(Exception):
    """The ioctl failed: ``errno`` is the positive errno, ``args[0]`` the pr_err text.

    Mirrors the -errno the DMA_MAP_BENCHMARK ioctl
    (kernel/dma/map_benchmark.c:map_benchmark_ioctl()) returns.
    """

    def __init__(self, errno: int, message: str):
        self.errno = errno
        super().__init__(message)


def _validate(b: MapBenchmark, num_nodes: int) -> None:
    # map_benchmark_ioctl(): the checks in the kernel's order, each -EINVAL with its pr_err
    if b.threads == 0 or b.threads > DMA_MAP_MAX_THREADS:
        raise MapBenchmarkError(EINVAL, "invalid thread number")
    if b.seconds == 0 or b.seconds > DMA_MAP_MAX_SECONDS:
        raise MapBenchmarkError(EINVAL, "invalid duration seconds")
    if b.dma_trans_ns > DMA_MAP_MAX_TRANS_DELAY:
        raise MapBenchmarkError(EINVAL, "invalid transmission delay")
    if b.node != NUMA_NO_NODE and not 0 <= b.node < num_nodes:
        raise MapBenchmarkError(EINVAL, "invalid numa node")
    if b.granule < 1 or b.granule > 1024:
        raise MapBenchmarkError(EINVAL, "invalid granule size")
    if b.dma_dir not in (DMA_MAP_BIDIRECTIONAL, DMA_MAP_TO_DEVICE, DMA_MAP_FROM_DEVICE):
        raise MapBenchmarkError(EINVAL, "invalid DMA direction")


def int_sqrt64(x: int) -> int:
    """int_sqrt64(): floor of the square root.

    Models lib/math/int_sqrt.c:int_sqrt64(). Returns the int. Raises ValueError for a negative
    ``x``, TypeError for a non-int.
    """
    return math.isqrt(x)


def _stats(sum_100ns: int, sum_sq: int, loops: int) -> tuple[int, int]:
    # do_map_benchmark(): avg = sum / loops, variance = sum_sq / loops - avg^2 (u64), stddev = isqrt
    avg = sum_100ns // loops
    variance = (sum_sq // loops - avg * avg) & ((1 << 64) - 1)
    return avg, int_sqrt64(variance)


def map_benchmark(dev, b: MapBenchmark, *, dma=None, max_loops: int | None = None,
                  progress=None) -> MapBenchmark:
    """Run the DMA_MAP_BENCHMARK ioctl on ``dev``; fills b's result fields and returns b.

    ``dma`` is the API module (dmaphys or dmaphys.reference; default dmaphys). ``max_loops``
    bounds the iterations (for tests); ``progress`` is called with the loop count now and then.
    Raises MapBenchmarkError(EINVAL/ENOMEM, text) where the kernel returns an error.

    Models kernel/dma/map_benchmark.c:do_map_benchmark() behind map_benchmark_ioctl(). Returns
    ``b``. The device's DMA mask is restored afterwards; exceptions of the DMA API calls (KernelBug,
    ...) propagate.
    """
    if dma is None:
        import dmaphys as dma
    m = dev.machine
    _validate(b, num_nodes=1)
    old_mask = dev.dma_mask
    if dma.dma_set_mask(dev, DMA_BIT_MASK(b.dma_bits) if 0 <= b.dma_bits <= 64 else 0) != 0:
        raise MapBenchmarkError(EINVAL, f"failed to set dma_mask on device {dev.name}")
    size = b.granule * PAGE_SIZE
    bufs = []
    try:
        for _ in range(b.threads):
            try:
                bufs.append(m.alloc_pages(b.granule))          # alloc_pages_exact
            except MemoryError:
                raise MapBenchmarkError(ENOMEM, "out of memory for the thread buffers") from None
        fill = b"\x66" * size
        direction = b.dma_dir                                  # same numbering as dma_data_direction
        sum_map = sum_unmap = sq_map = sq_unmap = loops = 0
        deadline = time.perf_counter_ns() + b.seconds * 1_000_000_000
        clock = time.perf_counter_ns
        map_single, unmap_single = dma.dma_map_single, dma.dma_unmap_single
        mapping_error = dma.dma_mapping_error
        thread = 0
        while True:
            if loops & 255 == 0:
                if clock() >= deadline or (max_loops is not None and loops >= max_loops):
                    break
                if progress is not None:
                    progress(loops)
            buf = bufs[thread]
            m.cpu = thread % m.cpus
            if direction != DMA_FROM_DEVICE:
                m.mem_write(buf, fill)
            t0 = clock()
            addr = map_single(dev, buf, size, direction)
            t1 = clock()
            if mapping_error(dev, addr):
                raise MapBenchmarkError(ENOMEM, f"dma_map_single failed on {dev.name}")
            if b.dma_trans_ns:
                m.advance(b.dma_trans_ns)                      # ndelay(dma_trans_ns)
            t2 = clock()
            unmap_single(dev, addr, size, direction)
            t3 = clock()
            b.sum_map_ns += t1 - t0
            b.sum_unmap_ns += t3 - t2
            map_100ns = (t1 - t0) // 100
            unmap_100ns = (t3 - t2) // 100
            sum_map += map_100ns
            sum_unmap += unmap_100ns
            sq_map += map_100ns * map_100ns
            sq_unmap += unmap_100ns * unmap_100ns
            loops += 1
            thread = (thread + 1) % b.threads
        b.loops = loops
        if loops:
            b.avg_map_100ns, b.map_stddev = _stats(sum_map, sq_map, loops)
            b.avg_unmap_100ns, b.unmap_stddev = _stats(sum_unmap, sq_unmap, loops)
    finally:
        m.cpu = 0
        for buf in bufs:
            m.free_pages(buf, b.granule)
        dev.dma_mask = old_mask
    return b


def format_report(b: MapBenchmark) -> str:
    """The user tool's three output lines.

    Mirrors the printf()s of tools/testing/selftests/dma/dma_map_benchmark.c main(). Returns the
    lines as one str. Raises IndexError for a ``dma_dir`` above 2.
    """
    return (f"dma mapping benchmark: threads:{b.threads} seconds:{b.seconds} node:{b.node} "
            f"dir:{DIR_NAMES[b.dma_dir]} granule: {b.granule}\n"
            f"average map latency(us):{b.avg_map_100ns / 10.0:.1f} "
            f"standard deviation:{b.map_stddev / 10.0:.1f}\n"
            f"average unmap latency(us):{b.avg_unmap_100ns / 10.0:.1f} "
            f"standard deviation:{b.unmap_stddev / 10.0:.1f}")


def check_tool_args(threads: int, seconds: int, xdelay: int, bits: int, dir: int, granule: int) -> str | None:
    """The user tool's own range checks (dma_map_benchmark.c main()): the message or None.

    Models tools/testing/selftests/dma/dma_map_benchmark.c main()'s checks. Returns the first
    failing check's message, or None. Raises nothing for ints.
    """
    if threads <= 0 or threads > DMA_MAP_MAX_THREADS:
        return f"invalid number of threads, must be in 1-{DMA_MAP_MAX_THREADS}"
    if seconds <= 0 or seconds > DMA_MAP_MAX_SECONDS:
        return f"invalid number of seconds, must be in 1-{DMA_MAP_MAX_SECONDS}"
    if xdelay < 0 or xdelay > DMA_MAP_MAX_TRANS_DELAY:
        return f"invalid transmit delay, must be in 0-{DMA_MAP_MAX_TRANS_DELAY}"
    if bits < 20 or bits > 64:
        return "invalid dma mask bit, must be in 20-64"
    if dir not in (DMA_MAP_BIDIRECTIONAL, DMA_MAP_TO_DEVICE, DMA_MAP_FROM_DEVICE):
        return "invalid dma direction"
    if granule < 1 or granule > 1024:
        return "invalid granule size"
    return None

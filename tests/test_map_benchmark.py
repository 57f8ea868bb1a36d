"""dmaphys bench: the dma_map_benchmark twin's checks, statistics and output."""

import json

import pytest

import dmaphys as dma
from dmaphys import map_benchmark as mb
from dmaphys.cli import main


@pytest.mark.parametrize("argv, msg", [
    (["-t", "0"], "invalid number of threads, must be in 1-1024"),
    (["-t", "1025"], "invalid number of threads, must be in 1-1024"),
    (["-s", "301"], "invalid number of seconds, must be in 1-300"),
    (["-x", "10000001"], "invalid transmit delay, must be in 0-10000000"),
    (["-b", "19"], "invalid dma mask bit, must be in 20-64"),
    (["-b", "65"], "invalid dma mask bit, must be in 20-64"),
    (["-d", "3"], "invalid dma direction"),
    (["-g", "0"], "invalid granule size"),
])
def test_tool_range_checks(argv, msg, capsys):
    assert main(["bench", *argv]) == 1
    assert capsys.readouterr().err.strip() == msg


@pytest.mark.parametrize("field, value, msg", [
    ("threads", 0, "invalid thread number"),
    ("seconds", 0, "invalid duration seconds"),
    ("dma_trans_ns", 10_000_001, "invalid transmission delay"),
    ("node", 3, "invalid numa node"),
    ("granule", 1025, "invalid granule size"),
    ("dma_dir", 3, "invalid DMA direction"),
])
def test_ioctl_checks(field, value, msg):
    m = dma.Machine(swiotlb=0)
    dev = m.add_device("bench")
    b = mb.MapBenchmark(**{field: value})
    with pytest.raises(mb.MapBenchmarkError) as ei:
        mb.map_benchmark(dev, b)
    assert str(ei.value) == msg and ei.value.errno == dma.EINVAL


def test_statistics_in_100ns_units():
    assert mb._stats(sum_100ns=30, sum_sq=100, loops=10) == (3, 1)    # var = 10 - 9
    assert mb.int_sqrt64(99) == 9
    b = mb.MapBenchmark(avg_map_100ns=7, map_stddev=12, avg_unmap_100ns=0, unmap_stddev=3)
    lines = mb.format_report(b).splitlines()
    assert lines == [
        "dma mapping benchmark: threads:1 seconds:20 node:-1 dir:BIDIRECTIONAL granule: 1",
        "average map latency(us):0.7 standard deviation:1.2",
        "average unmap latency(us):0.0 standard deviation:0.3",
    ]


@pytest.mark.parametrize("iommu", ["off", "strict", "lazy"])
def test_bench_runs_and_restores_mask(iommu, capsys):
    assert main(["bench", "-s", "1", "-t", "2", "-g", "2", "--loops", "300", "--iommu", iommu,
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["loops"] >= 300 and out["threads"] == 2 and out["granule"] == 2


def test_bench_mask_restored_and_buffers_freed():
    m = dma.Machine()
    dev = m.add_device("bench", dma_mask=dma.DMA_BIT_MASK(64))
    before = m.mem.allocated_pages
    mb.map_benchmark(dev, mb.MapBenchmark(seconds=1, dma_bits=32, granule=4), max_loops=50)
    assert dev.dma_mask == dma.DMA_BIT_MASK(64)
    assert m.mem.allocated_pages == before

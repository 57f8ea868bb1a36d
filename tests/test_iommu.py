"""The IOMMU core (iommu.pxi / reference/iommu.py): domain types and groups, unmanaged-domain
iommu_map / iommu_unmap / iommu_iova_to_phys per format, device requests through the IOMMU,
permission and translation faults (raise and record modes), and core-vs-reference agreement."""

import contextlib
import errno
import warnings

import pytest
from hypothesis import given
from hypothesis import strategies as st

import dmaphys
import dmaphys.reference as reference
from dmaphys import EBUSY, EINVAL, IOMMU_READ, IOMMU_WRITE, IommuFault, KernelWarning

RW = IOMMU_READ | IOMMU_WRITE
ENODEV = errno.ENODEV
PAGE = 4096
PHYS = 0x4000_0000
FORMATS = ["vtd-ss", "vtd-ss-5level", "x86-64", "arm-lpae-s1-4k", "arm-lpae-s1-16k", "arm-lpae-s1-64k"]
HAVE_DMA_IOMMU = hasattr(reference.dma_iommu, "iommu_dma_init_domain")
needs_dma_iommu = pytest.mark.skipif(not HAVE_DMA_IOMMU, reason="needs the dma-iommu branch")


def machine(impl):
    return impl.Machine(cpus=1, swiotlb=0)


def setup(impl, fmt="vtd-ss", **kw):
    """A device moved from the blocked domain onto a fresh unmanaged domain."""
    m = machine(impl)
    mm = m.add_iommu(fmt, **kw)
    dev = m.add_device("dev0", iommu=mm, domain_type="blocked")
    d = mm.domain_alloc()
    assert impl.iommu_attach_device(d, dev) == 0
    return m, mm, dev, d


# ---- construction --------------------------------------------------------------------------------
def test_iommu_construction_and_reserved_regions(impl):
    m = machine(impl)
    mm = m.add_iommu()
    assert (mm.fmt, mm.strict, mm.fault_mode, mm.faults) == ("vtd-ss", True, "raise", [])
    assert mm.reserved_regions == [(0xFEE00000, 0x100000, "msi")]
    assert m.add_iommu("arm-lpae-s1-4k").reserved_regions == [(0x8000000, 0x100000, "sw_msi")]
    regions = [(0x1000, 0x2000, "IOMMU_RESV_DIRECT"), (0, 4096, 2)]
    assert m.add_iommu(reserved_regions=regions).reserved_regions == [(0x1000, 0x2000, "direct"),
                                                                      (0, 4096, "reserved")]
    assert [d.type for d in mm.domains] == ["identity", "blocked"]
    for bad in ({"fmt": "no-such-format"}, {"fault_mode": "ignore"}, {"reserved_regions": [(0, 1, "bogus")]},
                {"ias": 60}):
        with pytest.raises(ValueError):
            m.add_iommu(**bad)
    with pytest.raises(TypeError):
        m.add_iommu(fmt=3)
    with pytest.raises(TypeError):
        impl.IommuDomain()
    with pytest.raises(ValueError):
        mm.fault_mode = "panic"


# ---- domain types ------------------------------------------------------------------------------------
def test_identity_domain_is_dma_direct(impl):
    m = machine(impl)
    mm = m.add_iommu()
    dev = m.add_device("dev0", iommu=mm, domain_type="identity")
    d = dev.domain
    assert d is mm.identity_domain and d.type == "identity" and not d.translates and not dev.dma_iommu
    assert d.pgtable is None and d.pgtable_root == 0
    m.mem_write(PHYS, b"direct")
    assert dev.dma_read(PHYS, 6) == b"direct"                  # no translation
    assert impl.iommu_iova_to_phys(d, 0x1234) == 0x1234
    assert impl.iommu_map(d, 0, PHYS, PAGE, RW) == -EINVAL
    assert impl.iommu_unmap(d, 0, PAGE) == 0
    dev2 = m.add_device("dev1", iommu=mm, domain_type="identity")
    assert dev2.domain is d and len(d.devices) == 2            # the static singleton
    with pytest.raises(ValueError):
        impl.iommu_domain_free(d)


def test_blocked_domain_faults_every_request(impl):
    m = machine(impl)
    mm = m.add_iommu()
    dev = m.add_device("dev0", iommu=mm, domain_type="blocked")
    assert dev.domain.translates and not dev.dma_iommu
    with pytest.raises(IommuFault) as ei:
        dev.dma_write(PHYS, b"x")
    assert (ei.value.reason, ei.value.access, ei.value.iova) == ("blocked", "write", PHYS)
    assert impl.iommu_iova_to_phys(dev.domain, PHYS) == 0
    assert mm.faults[0]["reason"] == "blocked" and dev.faults == 1


def test_attach_errors_leave_state_intact(impl):
    m = machine(impl)
    mm, other = m.add_iommu(), m.add_iommu()
    dev = m.add_device("dev0", iommu=mm, domain_type="blocked")
    with pytest.raises(ValueError):
        mm.attach_device(dev, None, "blocked")                  # attached twice
    with pytest.raises(ValueError):
        m.add_device("dev1", iommu=mm, domain_type="passthrough")
    with pytest.raises(ValueError):
        m.add_device("dev2", iommu=mm, domain=other.domain_alloc())
    with pytest.raises(TypeError):
        impl.iommu_map("not a domain", 0, 0, PAGE, RW)
    assert "dev1" not in m.devices and "dev2" not in m.devices
    assert dev.domain is mm.blocked_domain and mm.blocked_domain.devices == [dev]


def test_iommu_attach_and_detach_device(impl):
    m = machine(impl)
    mm = m.add_iommu()
    dev = m.add_device("dev0", iommu=mm, domain_type="blocked")
    plain = m.add_device("plain")
    d, d2 = mm.domain_alloc(), mm.domain_alloc()
    assert impl.iommu_attach_device(d, plain) == -ENODEV
    assert impl.iommu_attach_device(m.add_iommu().domain_alloc(), dev) == -EINVAL
    assert impl.iommu_attach_device(d, dev) == 0
    assert dev.domain is d and d.devices == [dev] and mm.blocked_domain.devices == []
    assert impl.iommu_attach_device(d2, dev) == -EBUSY
    with pytest.warns(KernelWarning, match="WARN_ON"):
        impl.iommu_detach_device(d2, dev)
    impl.iommu_detach_device(d, dev)
    assert dev.domain is mm.blocked_domain and d.devices == []
    # a group of two devices cannot be attached to by one of them
    dev1 = m.add_device("dev1", iommu=mm, domain_type="blocked")
    assert impl.iommu_attach_device(d, dev1) == -EINVAL


def test_domain_free_and_remove_device(impl):
    m, mm, dev, d = setup(impl)
    assert impl.iommu_map(d, 0, PHYS, 4 * PAGE, RW) == 0
    assert d.pgtable.table_pages >= 4 and d.pgtable_root
    with pytest.raises(ValueError):
        impl.iommu_domain_free(d)                               # still has a device
    m.remove_device(dev)                                        # back to blocked, then released
    assert dev.domain is None and d.devices == [] and mm.blocked_domain.devices == []
    root = d.pgtable_root
    impl.iommu_domain_free(d)
    assert d.freed and d.pgtable_root == 0 and d not in mm.domains
    assert m.alloc_pages(1, limit=root + PAGE) >= 0             # table pages went back to RAM
    with pytest.raises(ValueError):
        impl.iommu_domain_free(d)
    with pytest.raises(ValueError):
        impl.iommu_map(d, 0, PHYS, PAGE, RW)
    with pytest.raises(ValueError):                            # not 0, which reads as an address
        impl.iommu_iova_to_phys(d, 0)


# ---- unmanaged domains: map / unmap / iova_to_phys per format -----------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
def test_unmanaged_round_trip(impl, fmt):
    m, mm, dev, d = setup(impl, fmt)
    desc = impl.IOPGTABLE_FORMATS[fmt]
    g = desc.granule
    assert (d.type, d.pgsize_bitmap) == ("unmanaged", desc.pgsize_bitmap)
    assert (d.aperture_start, d.aperture_end) == (0, d.pgtable.aperture_end)
    iova, phys = 16 * g, PHYS
    assert impl.iommu_map(d, iova, phys, 2 * g, RW) == 0
    assert impl.iommu_iova_to_phys(d, iova + 0x123) == phys + 0x123
    assert impl.iommu_iova_to_phys(d, iova + g + 7) == phys + g + 7
    with pytest.warns(KernelWarning) if desc.family == "io-pgtable-arm" else contextlib.nullcontext():
        assert impl.iommu_map(d, iova + g, phys, g, RW) == -desc.map_exists_errno   # arm WARNs
    assert impl.iommu_map(d, iova + 1, phys, g, RW) == -EINVAL            # misaligned
    assert impl.iommu_unmap(d, iova + 1, g) == 0
    # device requests land in the right RAM bytes
    dev.dma_write(iova + g - 2, b"wxyz")
    assert m.mem_read(phys + g - 2, 4) == b"wxyz"
    m.mem_write(phys + 5, b"hello")
    assert dev.dma_read(iova + 5, 5) == b"hello"
    assert impl.iommu_unmap(d, iova, 2 * g) == 2 * g
    assert impl.iommu_iova_to_phys(d, iova) == 0
    with pytest.raises(IommuFault):
        dev.dma_read(iova, 1)                                   # iommu_unmap synced the IOTLB
    assert d.stats["iotlb_syncs"] >= 1


def test_large_pages_and_whole_leaf_unmap_invalidates_the_leaf(impl):
    m, mm, dev, d = setup(impl)
    assert impl.iommu_map(d, 0x20_0000, 0x4020_0000, 0x20_0000, RW) == 0
    dev.dma_read(0x20_1000, 1)
    # generic_pt unmaps the whole 2 MiB leaf; the gather covers it, so the IOTLB entry goes
    assert impl.iommu_unmap(d, 0x20_0000, PAGE) == 0x20_0000
    assert mm.iotlb.probe(d, 0x20_1000) is None


def test_failed_map_rolls_back_with_iotlb_sync(impl):
    m, mm, dev, d = setup(impl)
    m.dma_debug.enabled = False
    assert impl.iommu_map(d, 0x10000, PHYS, PAGE, RW) == 0
    dev.dma_read(0x10000, 1)
    assert impl.iommu_unmap_fast(d, 0x10000, PAGE) == PAGE       # stale IOTLB entry left behind
    assert impl.iommu_map(d, 0x12000, PHYS, PAGE, RW) == 0
    assert impl.iommu_map(d, 0x10000, PHYS, 3 * PAGE, RW) < 0    # collides at 0x12000
    assert impl.iommu_iova_to_phys(d, 0x10000) == 0              # the first two pages rolled back
    assert impl.iommu_iova_to_phys(d, 0x12000) == PHYS
    assert mm.iotlb.probe(d, 0x10000) is None                    # ...through iommu_unmap's sync


# ---- faults ------------------------------------------------------------------------------------------------
def test_permission_faults(impl):
    m, mm, dev, d = setup(impl)
    assert impl.iommu_map(d, 0x10000, PHYS, PAGE, IOMMU_READ) == 0
    assert impl.iommu_map(d, 0x11000, PHYS + PAGE, PAGE, IOMMU_WRITE) == 0       # vtd-ss: W without R
    m.mem_write(PHYS, b"ro")
    assert dev.dma_read(0x10000, 2) == b"ro"
    with pytest.raises(IommuFault) as ei:
        dev.dma_write(0x10000, b"XX")
    e = ei.value
    assert (e.reason, e.access, e.iova, e.size) == ("write-denied", "write", 0x10000, 2)
    assert m.mem_read(PHYS, 2) == b"ro"
    dev.dma_write(0x11000, b"wo")
    assert m.mem_read(PHYS + PAGE, 2) == b"wo"
    with pytest.raises(IommuFault, match="read-denied"):
        dev.dma_read(0x11000, 2)
    assert [f["reason"] for f in mm.faults] == ["write-denied", "read-denied"]
    assert dev.faults == 2 and d.faults == 2
    assert set(mm.faults[0]) == {"device", "iova", "size", "access", "reason", "domain", "time"}


def test_unmapped_and_out_of_range_faults(impl):
    m, mm, dev, d = setup(impl)
    m.advance(1234)
    with pytest.raises(IommuFault) as ei:
        dev.dma_read(0x5000, 8)
    assert ei.value.reason == "not-present" and mm.faults[-1]["time"] == 1234
    with pytest.raises(IommuFault, match="address-size"):
        dev.dma_read(1 << 50, 8)                                # beyond the 48-bit table
    dev.dma_mask = (1 << 32) - 1
    with pytest.raises(dmaphys.DmaFault, match="addressing limit"):
        dev.dma_read(1 << 33, 8)                                # the device cannot emit it at all


def test_record_mode_reads_ff_and_drops_writes(impl):
    m, mm, dev, d = setup(impl, fault_mode="record")
    assert impl.iommu_map(d, 0x10000, PHYS, PAGE, RW) == 0
    m.mem_write(PHYS + PAGE - 4, b"tail")
    data = dev.dma_read(0x10000 + PAGE - 4, 12)                 # runs into an unmapped page
    assert data == b"tail" + b"\xff" * 8
    dev.dma_write(0x10000 + PAGE - 2, b"ABCD")                  # first two bytes land, rest dropped
    assert m.mem_read(PHYS + PAGE - 2, 2) == b"AB"
    assert m.mem_read(PHYS + PAGE, 2) == b"\x00\x00"
    assert [(f["iova"], f["size"], f["access"]) for f in mm.faults] == [(0x11000, 8, "read"),
                                                                        (0x11000, 2, "write")]
    mm.clear_faults()
    assert mm.faults == []


def test_fault_mode_switch_at_runtime(impl):
    m, mm, dev, d = setup(impl)
    mm.fault_mode = "record"
    assert dev.dma_read(0, 2) == b"\xff\xff"
    mm.fault_mode = "raise"
    with pytest.raises(IommuFault):
        dev.dma_read(0, 2)


# ---- DMA domains (iommu_dma_init_domain lives in dma_iommu, another branch) ---------------------
@needs_dma_iommu
def test_default_dma_domain_types(impl):
    m = machine(impl)
    strict, lazy = m.add_iommu(strict=True), m.add_iommu(strict=False)
    a = m.add_device("a", iommu=strict)
    b = m.add_device("b", iommu=lazy)
    c = m.add_device("c", iommu=lazy, untrusted=True)
    e = m.add_device("e", iommu=strict, domain_type="dma-fq")
    assert (a.domain.type, b.domain.type, c.domain.type, e.domain.type) == ("dma", "dma-fq", "dma", "dma-fq")
    assert all(x.dma_iommu for x in (a, b, c, e))
    assert a.domain.iova_cookie is not None and a.domain.is_default


@needs_dma_iommu
def test_group_shares_a_dma_domain_and_is_freed_with_its_last_device(impl):
    m = machine(impl)
    mm = m.add_iommu()
    a = m.add_device("a", iommu=mm)
    b = m.add_device("b", iommu=mm, domain=a.domain)
    d = a.domain
    assert b.domain is d and d.devices == [a, b] and b.dma_iommu
    m.remove_device(a)
    assert not d.freed and d.devices == [b]
    m.remove_device(b)
    assert d.freed and d not in mm.domains and d.iova_cookie is None


# ---- core vs reference -----------------------------------------------------------------------------------
OPS = st.lists(st.one_of(
    st.tuples(st.just("map"), st.integers(0, 15), st.integers(0, 31), st.integers(1, 4), st.integers(0, 3)),
    st.tuples(st.just("unmap"), st.integers(0, 15), st.integers(1, 4)),
    st.tuples(st.just("unmap_fast"), st.integers(0, 15), st.integers(1, 4)),
    st.tuples(st.just("sync"), st.integers(0, 15), st.integers(1, 4)),
    st.tuples(st.just("read"), st.integers(0, 17 * PAGE), st.integers(1, 2 * PAGE)),
    st.tuples(st.just("write"), st.integers(0, 17 * PAGE), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("inv_domain")),
    st.tuples(st.just("inv_all")),
), max_size=40)
TLBS = st.sampled_from([{"entries": 8, "ways": 2}, {"entries": 4, "ways": 4, "policy": "fifo"},
                        {"entries": 8, "ways": 4, "policy": "random", "seed": 3},
                        {"mode": "qemu", "max_size": 6}, False])


def _run(impl, fmt, tlb, ops):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _run_ops(impl, fmt, tlb, ops)


def _op(impl, mm, dev, d, g, op):
    if op[0] == "map":
        _, i, p, n, prot = op
        return impl.iommu_map(d, i * g, PHYS + p * g, n * g, prot or RW)
    if op[0] in ("unmap", "unmap_fast", "sync"):
        fn = {"unmap": impl.iommu_unmap, "unmap_fast": impl.iommu_unmap_fast,
              "sync": impl.iommu_iotlb_sync}[op[0]]
        return fn(d, op[1] * g, op[2] * g)
    if op[0] == "read":
        return dev.dma_read(op[1] * (g // PAGE), op[2])
    if op[0] == "write":
        return dev.dma_write(op[1] * (g // PAGE), op[2])
    if mm.iotlb is None:
        return None
    return mm.iotlb.invalidate_domain(d) if op[0] == "inv_domain" else mm.iotlb.invalidate_all()


def _run_ops(impl, fmt, tlb, ops):
    m, mm, dev, d = setup(impl, fmt, iotlb=tlb, fault_mode="record")
    m.dma_debug.enabled = False
    g = d.pgtable.granule
    out = []
    for op in ops:
        try:
            out.append(_op(impl, mm, dev, d, g, op))
        except dmaphys.KernelBug as e:            # where the kernel BUG()s
            out.append(("KernelBug", str(e)))
    st_ = mm.get_state()
    return (out, st_, [impl.iommu_iova_to_phys(d, i * g) for i in range(20)], m.mem_read(PHYS, 40 * g),
            m.warnings_log)


@given(fmt=st.sampled_from(["vtd-ss", "x86-64", "arm-lpae-s1-4k", "arm-lpae-s1-16k"]), tlb=TLBS, ops=OPS)
def test_core_and_reference_agree(fmt, tlb, ops):
    core = _run(dmaphys, fmt, dict(tlb) if tlb else tlb, ops)
    ref = _run(reference, fmt, dict(tlb) if tlb else tlb, ops)
    assert core[0] == ref[0]
    assert core[1] == ref[1]
    assert core[2] == ref[2]
    assert core[3] == ref[3]
    assert core[4] == ref[4]


@pytest.mark.parametrize("fmt", ["arm-lpae-s1-16k", "arm-lpae-s1-64k"])
def test_dma_domain_with_granule_above_page_size_is_a_bug_and_leaves_no_state(impl, fmt):
    """init_iova_domain() BUG_ONs a granule > PAGE_SIZE: the attach is refused, nothing leaks;
    identity and unmanaged domains of the same IOMMU still work."""
    m = impl.Machine(swiotlb=0)
    io = m.add_iommu(fmt=fmt)
    pages, domains = m.mem.allocated_pages, len(io.domains)
    with pytest.raises(dmaphys.KernelBug, match="init_iova_domain"):
        m.add_device("d", iommu=io)
    assert m.devices == {} and m.mem.allocated_pages == pages and len(io.domains) == domains
    assert m.add_device("d", iommu=io, domain_type="identity").domain.type == "identity"
    u = io.domain_alloc()
    assert impl.iommu_map(u, 0x40000, 0x100000, 0x40000, IOMMU_READ) == 0
    assert impl.iommu_iova_to_phys(u, 0x40010) == 0x100010

"""Core vs reference: the same random streams of DMA API calls give the same results.

A hypothesis RuleBasedStateMachine drives dmaphys._core and dmaphys.reference with identical
map / unmap / sync / sg / resource / coherent-alloc calls and device and CPU accesses, on a
machine with several kinds of device (64-bit, 32-bit bouncing, force_bounce, range-map
offsets with a narrow mask, non-coherent with min_align_mask). After every step it demands
the same return values, exceptions, kernel warnings, device statistics, swiotlb state and
memory bytes (buffers and the bounce pool).
"""

import warnings

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, initialize, invariant, rule

import dmaphys as dma
import dmaphys._core as core
import dmaphys.reference as reference

MiB = 1 << 20
GiB = 1 << 30
LOW = 0x10_0000                     # buffer window in low RAM
HIGH = 4 * GiB + 0x10_0000          # buffer window above 4 GiB
WINDOW = 64 << 10
BAR = 0xE000_0000

DEVICES = {
    "d64": dict(),
    "d32": dict(dma_mask=dma.DMA_BIT_MASK(32)),
    "fb": dict(force_bounce=True),
    "ofs": dict(dma_mask=dma.DMA_BIT_MASK(29),
                dma_range_map=[(0, 0x1000_0000, 64 * MiB), (4 * GiB, 0x2000_0000, 64 * MiB)]),
    "nc": dict(dma_mask=dma.DMA_BIT_MASK(32), coherent=False, min_align_mask=0xFFF),
}

dev_names = st.sampled_from(sorted(DEVICES))
dirs = st.sampled_from([dma.DMA_BIDIRECTIONAL, dma.DMA_TO_DEVICE, dma.DMA_FROM_DEVICE])
attrs_st = st.sampled_from([0, dma.DMA_ATTR_SKIP_CPU_SYNC, dma.DMA_ATTR_NO_WARN, dma.DMA_ATTR_WEAK_ORDERING])
bases = st.sampled_from([LOW, HIGH])
offsets = st.integers(0, WINDOW - 1)
sizes = st.sampled_from([1, 7, 64, 100, 2048, 2049, 4096, 5000, 12288])
payloads = st.binary(min_size=1, max_size=64)


def build(impl):
    m = impl.Machine(ram=[(0, 64 * MiB), (4 * GiB, 64 * MiB)], cpus=2, swiotlb=MiB, dma_debug=False)
    m.add_mmio(BAR, MiB, "bar0")
    devs = {name: m.add_device(name, **kw) for name, kw in DEVICES.items()}
    return m, devs


def outcome(fn, *args):
    """(result, exception type + text) of one call, with kernel warnings recorded, not raised."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return ("ok", fn(*args))
        except Exception as e:                                 # compared between the backends
            return ("raise", type(e).__name__, str(e))


class CoreVsReference(RuleBasedStateMachine):
    mappings = Bundle("mappings")
    sglists = Bundle("sglists")
    buffers = Bundle("buffers")

    def __init__(self):
        super().__init__()
        self.c, self.cd = build(core)
        self.r, self.rd = build(reference)
        self.sgs = []                                         # (core list, reference list)

    def both(self, name, devname, *args):
        """Call impl.name(dev, *args) on both backends; the outcomes must match."""
        oc = outcome(getattr(core, name), self.cd[devname], *args)
        orf = outcome(getattr(reference, name), self.rd[devname], *args)
        assert oc == orf, (name, devname, args)
        return oc

    # ---- single mappings -------------------------------------------------------------------
    @rule(target=mappings, dev=dev_names, base=bases, off=offsets, size=sizes, dir=dirs, attrs=attrs_st)
    def map_phys(self, dev, base, off, size, dir, attrs):
        out = self.both("dma_map_phys", dev, base + off, size, dir, attrs)
        addr = out[1] if out[0] == "ok" else dma.DMA_MAPPING_ERROR
        return (dev, addr, size, dir, attrs)

    @rule(target=mappings, dev=dev_names, off=st.integers(0, MiB - 64), size=sizes, dir=dirs)
    def map_resource(self, dev, off, size, dir):
        out = self.both("dma_map_resource", dev, BAR + off, size, dir, 0)
        return (dev, out[1] if out[0] == "ok" else dma.DMA_MAPPING_ERROR, size, dir, dma.DMA_ATTR_MMIO)

    @rule(m=consumes(mappings))
    def unmap(self, m):
        dev, addr, size, dir, attrs = m
        if addr != dma.DMA_MAPPING_ERROR:
            self.both("dma_unmap_phys", dev, addr, size, dir, attrs)

    @rule(m=mappings, data=st.data(), to_cpu=st.booleans())
    def sync(self, m, data, to_cpu):
        dev, addr, size, dir, attrs = m
        if addr == dma.DMA_MAPPING_ERROR or attrs & dma.DMA_ATTR_MMIO:
            return
        off = data.draw(st.integers(0, size - 1))
        n = data.draw(st.integers(1, size - off))
        name = "dma_sync_single_range_for_cpu" if to_cpu else "dma_sync_single_range_for_device"
        self.both(name, dev, addr, off, n, dir)

    @rule(m=mappings, data=st.data(), payload=payloads)
    def device_write(self, m, data, payload):
        dev, addr, size, dir, attrs = m
        if addr == dma.DMA_MAPPING_ERROR:
            return
        off = data.draw(st.integers(0, size - 1))
        payload = payload[:size - off]
        oc = outcome(self.cd[dev].dma_write, addr + off, payload)
        orf = outcome(self.rd[dev].dma_write, addr + off, payload)
        assert oc == orf

    @rule(m=mappings, data=st.data())
    def device_read(self, m, data):
        dev, addr, size, dir, attrs = m
        if addr == dma.DMA_MAPPING_ERROR:
            return
        off = data.draw(st.integers(0, size - 1))
        n = min(size - off, 256)
        assert outcome(self.cd[dev].dma_read, addr + off, n) == outcome(self.rd[dev].dma_read, addr + off, n)

    @rule(base=bases, off=offsets, payload=payloads)
    def cpu_write(self, base, off, payload):
        payload = payload[:WINDOW - off]
        self.c.mem_write(base + off, payload)
        self.r.mem_write(base + off, payload)

    @rule(dev=dev_names, bad=st.sampled_from([3, 7, -1]))
    def bad_direction(self, dev, bad):
        out = self.both("dma_map_phys", dev, LOW, 64, bad, 0)
        assert out[0] == "raise" and out[1] == "KernelBug"

    # ---- scatter-gather --------------------------------------------------------------------
    @rule(target=sglists, dev=dev_names, dir=dirs, attrs=attrs_st,
          ents=st.lists(st.tuples(bases, offsets, sizes), min_size=1, max_size=4), table=st.booleans())
    def map_sg(self, dev, dir, attrs, ents, table):
        spec = [(b + o, s) for b, o, s in ents]
        cs, rs = core.ScatterList(spec), reference.ScatterList(spec)
        if table:
            oc = outcome(core.dma_map_sgtable, self.cd[dev], cs, dir, attrs)
            orf = outcome(reference.dma_map_sgtable, self.rd[dev], rs, dir, attrs)
            ok = oc == ("ok", 0)
        else:
            oc = outcome(core.dma_map_sg_attrs, self.cd[dev], cs, len(spec), dir, attrs)
            orf = outcome(reference.dma_map_sg_attrs, self.rd[dev], rs, len(spec), dir, attrs)
            ok = oc[0] == "ok" and oc[1] > 0
        assert oc == orf
        assert [(e.dma_address, e.dma_length, e.dma_flags) for e in cs] == \
               [(e.dma_address, e.dma_length, e.dma_flags) for e in rs]
        assert cs.nents == rs.nents
        self.sgs.append((cs, rs))
        return (dev, len(self.sgs) - 1, dir, attrs, ok)

    @rule(s=sglists, to_cpu=st.booleans())
    def sync_sg(self, s, to_cpu):
        dev, i, dir, attrs, ok = s
        if not ok:
            return
        cs, rs = self.sgs[i]
        name = "dma_sync_sgtable_for_cpu" if to_cpu else "dma_sync_sgtable_for_device"
        assert outcome(getattr(core, name), self.cd[dev], cs, dir) == \
               outcome(getattr(reference, name), self.rd[dev], rs, dir)

    @rule(s=consumes(sglists))
    def unmap_sg(self, s):
        dev, i, dir, attrs, ok = s
        if not ok:
            return
        cs, rs = self.sgs[i]
        assert outcome(core.dma_unmap_sgtable, self.cd[dev], cs, dir, attrs) == \
               outcome(reference.dma_unmap_sgtable, self.rd[dev], rs, dir, attrs)

    # ---- coherent allocations --------------------------------------------------------------
    @rule(target=buffers, dev=dev_names, size=st.sampled_from([1, 4096, 5000, 65536]))
    def alloc(self, dev, size):
        out = self.both("dma_alloc_coherent", dev, size)
        return (dev, size, out[1] if out[0] == "ok" else None)

    @rule(b=consumes(buffers))
    def free(self, b):
        dev, size, got = b
        if got is not None:
            self.both("dma_free_coherent", dev, size, *got)

    # ---- masks and queries -----------------------------------------------------------------
    @rule(dev=dev_names, addr=st.sampled_from([LOW, HIGH, 0x3F0_0000, dma.DMA_MAPPING_ERROR]))
    def queries(self, dev, addr):
        for name in ("dma_need_unmap", "dma_max_mapping_size", "dma_opt_mapping_size",
                     "dma_addressing_limited", "dma_get_required_mask", "dma_get_mask"):
            self.both(name, dev)
        self.both("dma_need_sync", dev, addr)
        self.both("dma_mapping_error", dev, addr)

    @rule(dev=dev_names, bits=st.sampled_from([20, 24, 28, 32, 64]))
    def set_mask(self, dev, bits):
        self.both("dma_set_mask_and_coherent", dev, dma.DMA_BIT_MASK(bits))

    # ---- the state after every step ----------------------------------------------------------
    @invariant()
    def same_state(self):
        assert self.c.warnings_log == self.r.warnings_log
        for name in DEVICES:
            cd, rd = self.cd[name], self.rd[name]
            assert cd.stats == rd.stats, name
            assert (cd.dma_skip_sync, cd.dma_uses_io_tlb, cd.dma_mask, cd.coherent_dma_mask) == \
                   (rd.dma_skip_sync, rd.dma_uses_io_tlb, rd.dma_mask, rd.coherent_dma_mask), name
        assert self.c.swiotlb.get_state() == self.r.swiotlb.get_state()
        assert self.c.mem.allocated_pages == self.r.mem.allocated_pages
        for base in (LOW, HIGH):
            assert self.c.mem_read(base, WINDOW) == self.r.mem_read(base, WINDOW)

    def teardown(self):
        assert self.c.mem_read(self.c.swiotlb.start, MiB) == self.r.mem_read(self.r.swiotlb.start, MiB)


TestCoreVsReference = CoreVsReference.TestCase


# ---- page tables: every format through the unmanaged-domain API ---------------------------------
PT_FORMATS = sorted(dma.IOPGTABLE_FORMATS)
PT_SIZES = st.sampled_from([1 << 12, 1 << 13, 1 << 14, 1 << 16, 1 << 21, 1 << 22, 3 << 12])
PT_SLOTS = st.sampled_from([0, 1 << 21, 1 << 30, 0x7FE00000, 1 << 39, (1 << 39) - (1 << 22), 1 << 47,
                           1 << 56])
PT_PROTS = st.sampled_from([1, 2, 3, 3 | 4, 1 | 8])


class PgtableCoreVsReference(RuleBasedStateMachine):
    """iommu_map / iommu_unmap / iommu_iova_to_phys streams on one domain of a random format
    (generic_pt vtd-ss, x86-64, amdv1 with its growing top and contiguous leaves, riscv Sv39/48/57;
    io-pgtable-arm), on an IOMMU with or without dirty tracking, with a device's reads and writes
    through the domain and set_dirty_tracking / read_and_clear_dirty calls:
    same return values, warnings, faults, dirty records, leaf maps, table pages and page-table
    bytes."""

    def __init__(self):
        super().__init__()
        self.doms = None

    @initialize(fmt=st.sampled_from(PT_FORMATS), coherent=st.booleans(), dirty=st.booleans(),
                iotlb=st.booleans())
    def setup(self, fmt, coherent, dirty, iotlb):
        self.fmt = fmt
        # io-pgtable-arm also with a non-coherent walker (table syncs, SW_SYNC, the CPU's cache)
        self.coherent = coherent or not fmt.startswith("arm-")
        self.ms = [impl.Machine(ram=[(0, 256 * MiB)], swiotlb=0, dma_debug=False)
                   for impl in (core, reference)]
        self.mmus = [m.add_iommu(fmt=fmt, coherent_walk=self.coherent, dirty_tracking=dirty,
                                  iotlb=None if iotlb else False,
                                 fault_mode="record") for m in self.ms]
        self.doms = [mmu.domain_alloc() for mmu in self.mmus]
        self.devs = [m.add_device("dev", iommu=mmu, domain=d)
                     for m, mmu, d in zip(self.ms, self.mmus, self.doms, strict=True)]
        self.mapped = []                                     # (iova, size) of successful maps

    def both(self, name, *args):
        oc = outcome(getattr(core, name), self.doms[0], *args)
        orf = outcome(getattr(reference, name), self.doms[1], *args)
        assert oc == orf, (self.fmt, name, args)
        return oc

    @rule(slot=PT_SLOTS, off=st.integers(0, 15), size=PT_SIZES, pa=st.integers(0, 63), prot=PT_PROTS)
    def map(self, slot, off, size, pa, prot):
        if self.both("iommu_map", slot + off * (1 << 16), pa * (1 << 16), size, prot) == ("ok", 0):
            self.mapped.append((slot + off * (1 << 16), size))

    @rule(slot=PT_SLOTS, off=st.integers(0, 15), size=PT_SIZES)
    def unmap(self, slot, off, size):
        self.both("iommu_unmap", slot + off * (1 << 16), size)

    @rule(slot=PT_SLOTS, off=st.integers(0, (1 << 22) - 1))
    def iova_to_phys(self, slot, off):
        self.both("iommu_iova_to_phys", slot + off)
        # the hardware walk reads memory (with a non-coherent walker: what the syncs cleaned)
        assert self.doms[0].pgtable.translate(slot + off) == self.doms[1].pgtable.translate(slot + off)

    # ---- dirty tracking ---------------------------------------------------------------------
    @rule(data=st.data(), sub=st.integers(0, (1 << 22) - 8), write=st.booleans())
    def device_access(self, data, sub, write):
        if not self.mapped:
            return
        iova, size = data.draw(st.sampled_from(self.mapped))
        iova += sub % size                                  # inside a mapping made (maybe unmapped since)
        if write:
            oc, orf = (outcome(dev.dma_write, iova, b"dirty!") for dev in self.devs)
        else:
            oc, orf = (outcome(dev.dma_read, iova, 8) for dev in self.devs)
        assert oc == orf, (self.fmt, iova, write)

    @rule(enable=st.booleans())
    def set_dirty_tracking(self, enable):
        assert self.doms[0].set_dirty_tracking(enable) == self.doms[1].set_dirty_tracking(enable)

    @rule(data=st.data(), start=st.integers(-(1 << 16), 1 << 16), size=PT_SIZES, no_clear=st.booleans())
    def read_and_clear_dirty(self, data, start, size, no_clear):
        if not self.mapped:
            return
        iova = max(0, data.draw(st.sampled_from(self.mapped))[0] + (start & ~0xFFF))
        flags = dma.IOMMU_DIRTY_NO_CLEAR if no_clear else 0
        oc, orf = (outcome(d.read_and_clear_dirty, iova, size, flags) for d in self.doms)
        assert oc == orf, (self.fmt, iova, size, flags)

    @invariant()
    def same_tables(self):
        if self.doms is None:
            return
        c, r = (d.pgtable.get_state() for d in self.doms)
        assert c == r, self.fmt
        assert self.mmus[0].faults == self.mmus[1].faults
        assert self.mmus[0].iotlb is None or self.mmus[0].iotlb.stats == self.mmus[1].iotlb.stats
        assert self.doms[0].stats == self.doms[1].stats
        assert self.ms[0].warnings_log == self.ms[1].warnings_log
        assert self.ms[0].mem.allocated_pages == self.ms[1].mem.allocated_pages
        for phys, _ in c["tables"][:8]:
            assert self.ms[0].mem_read(phys, 4096) == self.ms[1].mem_read(phys, 4096)
        assert self.ms[0].mem.cache_dirty_lines() == self.ms[1].mem.cache_dirty_lines()
        pc, pr = (d.pgtable for d in self.doms)
        assert (pc.table_syncs, pc.table_sync_bytes) == (pr.table_syncs, pr.table_sync_bytes)


TestPgtableCoreVsReference = PgtableCoreVsReference.TestCase
# the profile's example count, shorter runs (each step compares every table page of both machines)
TestPgtableCoreVsReference.settings = settings(stateful_step_count=15)

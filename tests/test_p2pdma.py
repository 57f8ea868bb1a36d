"""drivers/pci/p2pdma.c: topology, map types and their cache, providers, bus routing (both backends)."""

import warnings

import pytest
from hypothesis import given
from hypothesis import strategies as st

import dmaphys as dma
import dmaphys.reference as reference

BUS_ADDR = dma.PCI_P2PDMA_MAP_BUS_ADDR
THRU = dma.PCI_P2PDMA_MAP_THRU_HOST_BRIDGE
NOT_SUPPORTED = dma.PCI_P2PDMA_MAP_NOT_SUPPORTED
NONE = dma.PCI_P2PDMA_MAP_NONE

BAR = 0xE000_0000          # CPU physical address of the provider's BAR
BUS = 0x8_0000_0000        # its PCI bus address (bus_offset != 0)


def machine(impl):
    return impl.Machine(ram=[(0, 1 << 30)], swiotlb=0)


def texts(m):
    return [t for _, t in m.warnings_log]


# ---- topology -------------------------------------------------------------------------------------

def test_hierarchy_as_pci_upstream_bridge_walks_it(impl):
    m = machine(impl)
    hb = m.add_host_bridge("hb0", p2p_allowlisted=True)
    sw = m.add_switch("sw0", parent=hb)
    inner = m.add_switch("sw1", parent=sw)
    a = m.add_device("a", parent=sw)
    b = m.add_device("b", parent=inner)
    chain = []
    n = b.p2p_node
    while n is not None:
        chain.append((n.kind_name, n.pci_name))
        n = n.upstream
    # b -> sw1 DSP -> sw1 USP -> sw0 DSP0 -> sw0 USP -> Root Port -> (root bus)
    assert chain == [("endpoint", "0000:06:00.0"), ("downstream-port", "0000:04:00.0"),
                     ("upstream-port", "0000:03:00.0"), ("downstream-port", "0000:02:00.0"),
                     ("upstream-port", "0000:01:00.0"), ("root-port", "0000:00:01.0")]
    assert a.p2p_node.upstream.pci_name == "0000:02:01.0"
    assert a.p2p_node.upstream.upstream is b.p2p_node.upstream.upstream.upstream.upstream
    assert a.p2p_node.map_types_idx == (0 << 16) | (0x05 << 8) | 0
    assert m.p2pdma.parent_of(a) is a.p2p_node.upstream
    assert sw.upstream_port.kind_name == "upstream-port" and inner.parent is sw
    assert hb.pci_name == "0000:00:00.0" and (hb.vendor, hb.device) == (0x8086, 0x2020)


def test_default_host_bridge_is_created_lazily(impl):
    m = machine(impl)
    assert m.p2pdma.default_host_bridge is None
    m.add_device("plat", pci=False)
    assert m.p2pdma.default_host_bridge is None
    d = m.add_device("nvme0")
    hb = m.p2pdma.default_host_bridge
    assert hb.name == "pci0000:00" and not hb.p2p_allowlisted
    assert d.p2p_node.host_bridge is hb and d.p2p_node.upstream.kind_name == "root-port"
    hb1 = m.add_host_bridge("hb1")
    assert hb1.domain == 1 and m.add_device("x", parent="hb1").p2p_node.pci_name == "0001:01:00.0"


def test_non_pci_devices_are_not_in_the_hierarchy(impl):
    m = machine(impl)
    card = m.add_device("card")
    aux = m.add_device("card.aux", pci=False, parent=card)
    assert aux.p2p_node is None and m.p2pdma.parent_of(aux) is card


# ---- map types ------------------------------------------------------------------------------------

def test_same_switch_is_bus_addr(impl):
    m = machine(impl)
    sw = m.add_switch("sw0", parent=m.add_host_bridge("hb0"))
    a, b = m.add_device("a", parent=sw), m.add_device("b", parent=sw)
    pg = m.add_p2pmem(a, BAR, 1 << 20)
    assert impl.pci_p2pdma_map_type(pg, b) == BUS_ADDR           # host bridge never consulted
    assert impl.pci_p2pdma_map_type(pg.mem, b) is BUS_ADDR
    assert impl.pci_p2pdma_distance(a, b) == 4                   # A -> DSP0 -> USP <- DSP1 <- B
    assert texts(m) == []


def test_same_device_is_bus_addr_distance_0(impl):
    m = machine(impl)
    a = m.add_device("a")                                         # default host bridge, not allow-listed
    pg = m.add_p2pmem(a, BAR, 1 << 20)
    assert impl.pci_p2pdma_map_type(pg, a) == BUS_ADDR
    assert impl.pci_p2pdma_distance(a, a, True) == 0


def test_acs_redirect_goes_through_an_allowlisted_host_bridge(impl):
    m = machine(impl)
    sw = m.add_switch("sw0", parent=m.add_host_bridge("hb0", p2p_allowlisted=True), acs_redirect=True)
    a, b = m.add_device("a", parent=sw), m.add_device("b", parent=sw)
    pg = m.add_p2pmem(a, BAR, 1 << 20)
    with pytest.warns(dma.KernelWarning):
        assert impl.pci_p2pdma_map_type(pg, b) == THRU
    assert texts(m) == [
        "b 0000:04:00.0: ACS redirect is set between the client and provider (0000:03:00.0)",
        "b 0000:04:00.0: to disable ACS redirect for this path, add the kernel parameter: "
        "pci=disable_acs_redir=0000:02:00.0;0000:02:01.0",
    ]
    assert impl.pci_p2pdma_distance(a, b) == 4                    # supported: the hop count


def test_acs_redirect_without_allowlisted_host_bridge_is_not_supported(impl):
    m = machine(impl)
    sw = m.add_switch("sw0", parent=m.add_host_bridge("hb0"), acs_redirect=True)
    a, b = m.add_device("a", parent=sw), m.add_device("b", parent=sw)
    pg = m.add_p2pmem(a, BAR, 1 << 20)
    with pytest.warns(dma.KernelWarning):
        assert impl.pci_p2pdma_map_type(pg, b) == NOT_SUPPORTED
    assert texts(m)[2:] == [
        "pci 0000:00:00.0: Host bridge not in P2PDMA whitelist: 8086:1237",
        "b 0000:04:00.0: cannot be used for peer-to-peer DMA as the client and provider (0000:03:00.0) "
        "do not share an upstream bridge or whitelisted host bridge",
    ]
    assert impl.pci_p2pdma_distance(a, b) == -1


def test_acs_on_an_unrelated_switch_does_not_matter(impl):
    m = machine(impl)
    hb = m.add_host_bridge("hb0")
    top = m.add_switch("top", parent=hb)
    acs = m.add_switch("acs", parent=hb, acs_redirect=True)
    a, b = m.add_device("a", parent=top), m.add_device("b", parent=top)
    m.add_device("c", parent=acs)
    assert impl.pci_p2pdma_map_type(m.add_p2pmem(a, BAR, 1 << 20), b) == BUS_ADDR


def test_acs_below_the_common_switch_counts(impl):
    """ACS on the downstream port above a nested switch redirects traffic crossing it."""
    m = machine(impl)
    hb = m.add_host_bridge("hb0", p2p_allowlisted=True)
    top = m.add_switch("top", parent=hb, acs_redirect=True)
    inner = m.add_switch("inner", parent=top)
    a, b = m.add_device("a", parent=inner), m.add_device("b", parent=inner)
    c = m.add_device("c", parent=top)
    pg = m.add_p2pmem(a, BAR, 1 << 20)
    assert impl.pci_p2pdma_map_type(pg, b) == BUS_ADDR            # meet at inner's USP
    assert impl.pci_p2pdma_distance(a, b) == 4
    with pytest.warns(dma.KernelWarning):
        assert impl.pci_p2pdma_map_type(pg, c) == THRU
    assert texts(m)[-1].endswith("pci=disable_acs_redir=0000:02:00.0;0000:02:01.0")
    assert impl.pci_p2pdma_distance(a, c) == 6


def test_different_switches_under_one_host_bridge(impl):
    for allow, expect, dist in ((True, THRU, 8), (False, NOT_SUPPORTED, -1)):
        m = machine(impl)
        hb = m.add_host_bridge("hb0", p2p_allowlisted=allow)
        a = m.add_device("a", parent=m.add_switch("s0", parent=hb))
        b = m.add_device("b", parent=m.add_switch("s1", parent=hb))
        pg = m.add_p2pmem(a, BAR, 1 << 20)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", dma.KernelWarning)
            assert impl.pci_p2pdma_map_type(pg, b) == expect
        assert impl.pci_p2pdma_distance(a, b) == dist             # chain lengths 4 + 4
        assert not any("ACS" in t for t in texts(m))


def test_root_ports_of_one_host_bridge(impl):
    m = machine(impl)
    hb = m.add_host_bridge("hb0", p2p_allowlisted=True)
    a, b = m.add_device("a", parent=hb), m.add_device("b", parent=hb)
    assert impl.pci_p2pdma_map_type(m.add_p2pmem(a, BAR, 1 << 20), b) == THRU
    assert impl.pci_p2pdma_distance(a, b) == 4                    # A, RP0 + B, RP1
    assert texts(m) == []                                         # allow-listed: nothing to say


def test_different_host_bridges(impl):
    m = machine(impl)
    h0 = m.add_host_bridge("h0", p2p_allowlisted=True)
    h1 = m.add_host_bridge("h1", p2p_allowlisted=True)
    h2 = m.add_host_bridge("h2")
    a, b, c = m.add_device("a", parent=h0), m.add_device("b", parent=h1), m.add_device("c", parent=h2)
    pg = m.add_p2pmem(a, BAR, 1 << 20)
    assert impl.pci_p2pdma_map_type(pg, b) == THRU
    with pytest.warns(dma.KernelWarning):
        assert impl.pci_p2pdma_map_type(pg, c) == NOT_SUPPORTED
    assert "pci 0002:00:00.0: Host bridge not in P2PDMA whitelist: 8086:1237" in texts(m)


def test_req_same_host_bridge_entries(impl):
    """Xeon E5-style whitelist entries allow P2P only below one host bridge."""
    m = machine(impl)
    h0 = m.add_host_bridge("h0", p2p_allowlisted=True, req_same_host_bridge=True)
    h1 = m.add_host_bridge("h1", p2p_allowlisted=True)
    a, b, c = m.add_device("a", parent=h0), m.add_device("b", parent=h0), m.add_device("c", parent=h1)
    assert (h0.vendor, h0.device) == (0x8086, 0x3C00)
    pg = m.add_p2pmem(a, BAR, 1 << 20)
    assert impl.pci_p2pdma_map_type(pg, b) == THRU
    with pytest.warns(dma.KernelWarning, match="do not share an upstream bridge"):
        assert impl.pci_p2pdma_map_type(pg, c) == NOT_SUPPORTED
    assert not any("whitelist:" in t for t in texts(m))           # a listed entry: no "not in" report


def test_cpu_supports_p2pdma_skips_the_whitelist(impl):
    m = machine(impl)
    m.p2pdma.cpu_supports_p2pdma = True                           # AMD Zen (family >= 0x17)
    a, b = m.add_device("a"), m.add_device("b", parent=m.add_host_bridge("other"))
    assert impl.pci_p2pdma_map_type(m.add_p2pmem(a, BAR, 1 << 20), b) == THRU
    assert texts(m) == []


def test_non_pci_client(impl):
    m = machine(impl)
    sw = m.add_switch("sw0", parent=m.add_host_bridge("hb0"))
    a, card = m.add_device("a", parent=sw), m.add_device("card", parent=sw)
    aux = m.add_device("card.aux", pci=False, parent=card)
    plat = m.add_device("plat", pci=False)
    pg = m.add_p2pmem(a, BAR, 1 << 20)
    # pci_p2pdma_map_type(): !dev_is_pci(dev) -> NOT_SUPPORTED, no parent walk, nothing cached
    assert impl.pci_p2pdma_map_type(pg, aux) == NOT_SUPPORTED
    assert impl.pci_p2pdma_map_type(pg, plat) == NOT_SUPPORTED
    assert pg.mem.p2pdma.map_types == {}
    # pci_p2pdma_distance_many(): find_parent_pci_dev() walks up to the PCI parent
    assert impl.pci_p2pdma_distance(a, aux) == 4
    assert impl.pci_p2pdma_distance(a, plat) == -1
    with pytest.warns(dma.KernelWarning, match="plat: cannot be used for peer-to-peer DMA as it is not a"):
        assert impl.pci_p2pdma_distance(a, plat, True) == -1
    assert impl.pci_p2pdma_distance_many(a, []) == -1
    assert impl.pci_p2pdma_distance_many(a, [card, aux]) == 8


def test_provider_without_p2p_memory(impl):
    m = machine(impl)
    sw = m.add_switch("sw0")
    a, b = m.add_device("a", parent=sw), m.add_device("b", parent=sw)
    assert impl.pci_p2pdma_map_type(a, b) == NOT_SUPPORTED        # pdev->p2pdma is NULL
    assert impl.pci_p2pdma_distance(a, b) == 4                    # distance needs no provider memory
    m.add_p2pmem(a, BAR, 1 << 20)
    assert impl.pci_p2pdma_map_type(a, b) == BUS_ADDR             # a provider Device picks its p2pdma


# ---- the per-client cache -----------------------------------------------------------------------

def test_cache_is_filled_on_first_use_and_keyed_by_client(impl):
    m = machine(impl)
    sw = m.add_switch("sw0", parent=m.add_host_bridge("hb0"), acs_redirect=True)
    a, b, c = (m.add_device(n, parent=sw) for n in "abc")
    pg = m.add_p2pmem(a, BAR, 1 << 20)
    cache = pg.mem.p2pdma
    assert cache.map_types == {}
    with pytest.warns(dma.KernelWarning):
        assert impl.pci_p2pdma_map_type(pg, b) == NOT_SUPPORTED
    n = len(m.warnings_log)
    assert n == 4
    assert impl.pci_p2pdma_map_type(pg, b) == NOT_SUPPORTED      # from the cache: silent
    assert len(m.warnings_log) == n
    assert cache.map_types == {b.p2p_node.map_types_idx: NOT_SUPPORTED}
    # a quiet distance query fills the cache too; map_type then never warns for that client
    assert impl.pci_p2pdma_distance(a, c) == -1
    assert cache.map_types[c.p2p_node.map_types_idx] == NOT_SUPPORTED
    assert impl.pci_p2pdma_map_type(pg, c) == NOT_SUPPORTED
    assert len(m.warnings_log) == n
    # a verbose distance query recomputes (and reports) every time
    with pytest.warns(dma.KernelWarning):
        impl.pci_p2pdma_distance(a, c, True)
    assert len(m.warnings_log) == n + 4


def test_cache_is_per_provider_device_not_per_bar(impl):
    m = machine(impl)
    sw = m.add_switch("sw0", parent=m.add_host_bridge("hb0", p2p_allowlisted=True), acs_redirect=True)
    a, b = m.add_device("a", parent=sw), m.add_device("b", parent=sw)
    bar0 = m.add_p2pmem(a, BAR, 1 << 20)
    bar2 = m.add_p2pmem(a, BAR + (1 << 24), 1 << 20)
    assert bar0.mem is not bar2.mem and bar0.mem.p2pdma is bar2.mem.p2pdma
    assert (bar0.mem.bar, bar2.mem.bar) == (0, 1)
    with pytest.warns(dma.KernelWarning):
        assert impl.pci_p2pdma_map_type(bar0, b) == THRU
    n = len(m.warnings_log)
    assert impl.pci_p2pdma_map_type(bar2, b) == THRU             # other BAR, same cache entry
    assert len(m.warnings_log) == n


# ---- pci_p2pdma_state / bus_addr_map -------------------------------------------------------------

def test_state_is_none_for_ram(impl):
    m = machine(impl)
    a = m.add_device("a")
    m.add_p2pmem(a, BAR, 1 << 20)
    state = impl.PciP2PdmaMapState()
    assert state.map == dma.PCI_P2PDMA_MAP_UNKNOWN and state.mem is None and state.bus_off == 0
    assert impl.pci_p2pdma_state(state, a, 0x10_0000) == NONE
    assert impl.pci_p2pdma_state(state, a, BAR + (1 << 20)) == NONE    # just past the pagemap
    assert state.mem is None and state.map == dma.PCI_P2PDMA_MAP_UNKNOWN
    with pytest.raises(dma.KernelBug):
        impl.pci_p2pdma_bus_addr_map(state, BAR)


def test_state_for_p2p_memory_and_bus_offset(impl):
    m = machine(impl)
    sw = m.add_switch("sw0", parent=m.add_host_bridge("hb0", p2p_allowlisted=True))
    a, b = m.add_device("a", parent=sw), m.add_device("b", parent=sw)
    c = m.add_device("c", parent="hb0")
    pg = m.add_p2pmem(a, BAR, 1 << 20, bus_addr=BUS)
    assert (pg.provider, pg.cpu_phys, pg.size) == (a, BAR, 1 << 20)
    assert pg.bus_offset == BUS - BAR and pg.bus_addr == BUS
    state = impl.PciP2PdmaMapState()
    assert impl.pci_p2pdma_state(state, b, BAR + 0x1234) == BUS_ADDR
    assert state.mem is pg.mem and state.pgmap is pg and state.provider is a
    assert state.map == BUS_ADDR and state.bus_off == BUS - BAR
    assert impl.pci_p2pdma_bus_addr_map(state, BAR + 0x1234) == BUS + 0x1234
    assert impl.pci_p2pdma_bus_addr_map(pg.mem, BAR) == BUS
    assert impl.pci_p2pdma_bus_addr_map(pg, BAR + 8) == BUS + 8
    # the state remembers the provider: a different client with the same state is not recomputed
    assert impl.pci_p2pdma_state(state, c, BAR) == BUS_ADDR
    assert impl.pci_p2pdma_state(impl.PciP2PdmaMapState(), c, BAR) == THRU


def test_state_recomputes_when_the_provider_changes(impl):
    m = machine(impl)
    hb = m.add_host_bridge("hb0", p2p_allowlisted=True)
    sw = m.add_switch("sw0", parent=hb)
    a, b = m.add_device("a", parent=sw), m.add_device("b", parent=sw)
    far = m.add_device("far", parent=hb)
    near_mem = m.add_p2pmem(a, BAR, 1 << 20)
    far_mem = m.add_p2pmem(far, BAR + (1 << 24), 1 << 20)
    state = impl.PciP2PdmaMapState()
    assert impl.pci_p2pdma_state(state, b, near_mem.cpu_phys) == BUS_ADDR
    assert impl.pci_p2pdma_state(state, b, far_mem.cpu_phys) == THRU
    assert state.mem is far_mem.mem
    assert impl.pci_p2pdma_state(state, b, 0) == NONE             # RAM leaves the state alone
    assert state.mem is far_mem.mem and state.map == THRU


def test_bus_offset_wraps_like_u64(impl):
    m = machine(impl)
    a = m.add_device("a")
    pg = m.add_p2pmem(a, 0xF000_0000, 1 << 16, bus_addr=0x1000_0000)   # bus below CPU
    assert pg.bus_offset == (0x1000_0000 - 0xF000_0000) % 2**64
    assert impl.pci_p2pdma_bus_addr_map(pg, 0xF000_0010) == 0x1000_0010
    assert pg.mem.bus_start == 0x1000_0000


# ---- the bus: peer requests routed by a switch ---------------------------------------------------

def bus_setup(impl, acs=False):
    m = machine(impl)
    hb = m.add_host_bridge("hb0", p2p_allowlisted=True)
    sw = m.add_switch("sw0", parent=hb, acs_redirect=acs)
    gpu, nic = m.add_device("gpu", parent=sw), m.add_device("nic", parent=sw)
    far = m.add_device("far", parent=hb)
    pg = m.add_p2pmem(gpu, BAR, 1 << 20, bus_addr=BUS)
    return m, gpu, nic, far, pg


def test_peer_write_at_the_bus_address_lands_in_the_bar(impl):
    m, gpu, nic, far, pg = bus_setup(impl)
    nic.dma_write(BUS + 0x100, b"peer-to-peer")
    assert m.mem_read(BAR + 0x100, 12) == b"peer-to-peer"
    m.mem_write(BAR + 0x2000, b"from the cpu")
    assert nic.dma_read(BUS + 0x2000, 12) == b"from the cpu"
    gpu.dma_write(BUS + 8, b"self")                               # the provider itself
    assert m.mem_read(BAR + 8, 4) == b"self"


def test_bus_address_not_reachable_faults(impl):
    m, gpu, nic, far, pg = bus_setup(impl)
    with pytest.raises(dma.DmaFault):                             # goes upstream: nothing at BUS
        far.dma_write(BUS + 0x100, b"x")
    assert far.faults == 1 and m.mem_read(BAR + 0x100, 1) == b"\0"
    with pytest.raises(dma.DmaFault):                             # runs off the end of the BAR
        nic.dma_write(BUS + (1 << 20) - 2, b"xyzw")
    other = m.add_device("other", parent=m.add_host_bridge("hb1", p2p_allowlisted=True))
    with pytest.raises(dma.DmaFault):
        other.dma_read(BUS, 4)


def test_acs_redirect_sends_peer_requests_upstream(impl):
    m, gpu, nic, far, pg = bus_setup(impl, acs=True)
    with pytest.raises(dma.DmaFault):                             # redirected: BUS is no CPU address
        nic.dma_write(BUS, b"x")
    nic.dma_write(BAR + 0x40, b"via the host")                    # THRU_HOST_BRIDGE uses CPU phys
    assert m.mem_read(BAR + 0x40, 12) == b"via the host"


def test_no_p2p_means_ram_as_usual(impl):
    m = machine(impl)
    d = m.add_device("d")
    d.dma_write(0x1000, b"ram")
    assert m.mem_read(0x1000, 3) == b"ram"


def test_same_bus_window_in_another_domain_is_separate(impl):
    m = machine(impl)
    h0, h1 = m.add_host_bridge("h0"), m.add_host_bridge("h1")
    s0, s1 = m.add_switch("s0", parent=h0), m.add_switch("s1", parent=h1)
    p0, c0 = m.add_device("p0", parent=s0), m.add_device("c0", parent=s0)
    p1, c1 = m.add_device("p1", parent=s1), m.add_device("c1", parent=s1)
    m.add_p2pmem(p0, BAR, 1 << 16, bus_addr=BUS)
    m.add_p2pmem(p1, BAR + (1 << 20), 1 << 16, bus_addr=BUS)      # same bus addresses, other domain
    c0.dma_write(BUS, b"zero")
    c1.dma_write(BUS, b"one!")
    assert m.mem_read(BAR, 4) == b"zero" and m.mem_read(BAR + (1 << 20), 4) == b"one!"


# ---- providers and bad input ---------------------------------------------------------------------

def test_p2pmem_regions(impl):
    m = machine(impl)
    a = m.add_device("a")
    m.add_p2pmem(a, BAR, 1 << 20)
    assert (BAR, 1 << 20, "mmio", "a BAR0") in m.regions
    m.add_mmio(0xD000_0000, 1 << 24, "a bar2")
    pg = m.add_p2pmem(a, 0xD000_0000 + (1 << 20), 1 << 20, bus_addr=BUS + (1 << 20))
    assert (pg.mem.bar_start, pg.mem.bar_size, pg.mem.bus_offset) == (0xD000_0000, 1 << 24, BUS - 0xD000_0000)
    pg2 = m.add_p2pmem(a, 0xD000_0000, 1 << 20, bus_addr=BUS)      # same BAR, same bus_offset
    assert pg2.mem is pg.mem and len(m.p2pdma.pagemaps) == 3 and len(m.p2pdma.providers) == 2
    assert m.p2pdma.pgmap_of(0xD000_0000 + 5) is pg2 and m.p2pdma.pgmap_of(0xD020_0000) is None
    assert all(r[2] == "ram" for r in m.regions if r[0] == 0)


def test_bad_parents(impl):
    m = machine(impl)
    other = impl.Machine(ram=[(0, 1 << 30)], swiotlb=0)
    sw = m.add_switch("sw0")
    dev = m.add_device("dev", parent=sw)
    with pytest.raises(ValueError, match="unknown parent 'nope'"):
        m.add_device("x", parent="nope")
    with pytest.raises(ValueError, match="another machine"):
        m.add_device("x", parent=other.add_switch("osw"))
    with pytest.raises(TypeError):
        m.add_device("x", parent=42)
    with pytest.raises(ValueError, match="PCI device's parent"):
        m.add_device("x", parent=dev)
    with pytest.raises(ValueError, match="non-PCI device"):
        m.add_device("x", pci=False, parent=sw)
    with pytest.raises(ValueError, match="switch's parent"):
        m.add_switch("s2", parent=dev)
    with pytest.raises(ValueError, match="exists already"):
        m.add_switch("sw0")
    with pytest.raises(ValueError, match="exists already"):
        m.add_host_bridge("sw0")
    assert "x" not in m.devices and len(sw.children) == 1         # nothing half-made


def test_port_and_bus_exhaustion(impl):
    m = machine(impl)
    sw = m.add_switch("sw0")
    for i in range(32):
        m.add_device(f"d{i}", parent=sw)
    with pytest.raises(ValueError, match="no free Downstream Port"):
        m.add_device("d32", parent=sw)
    assert "d32" not in m.devices


def test_bad_p2pmem(impl):
    m = machine(impl)
    sw = m.add_switch("sw0")
    a, b = m.add_device("a", parent=sw), m.add_device("b", parent=sw)
    plat = m.add_device("plat", pci=False)
    m.add_p2pmem(a, BAR, 1 << 20, bus_addr=BUS)
    with pytest.raises(ValueError, match="overlaps the P2P memory"):
        m.add_p2pmem(a, BAR + 0x1000, 0x1000)
    with pytest.raises(ValueError, match="overlaps the P2P memory"):
        m.add_p2pmem(b, BAR - 0x1000, 0x2000)
    with pytest.raises(ValueError, match="is RAM"):
        m.add_p2pmem(b, 0x10_0000, 0x1000)
    with pytest.raises(ValueError, match="straddles"):
        m.add_p2pmem(b, (1 << 30) - 0x1000, 0x2000)
    with pytest.raises(ValueError, match="not a PCI device"):
        m.add_p2pmem(plat, 0xD000_0000, 0x1000)
    with pytest.raises(ValueError, match="page aligned"):
        m.add_p2pmem(b, 0xD000_0800, 0x1000)
    with pytest.raises(ValueError, match="page aligned"):
        m.add_p2pmem(b, 0xD000_0000, 0)
    with pytest.raises(TypeError):
        m.add_p2pmem("a", 0xD000_0000, 0x1000)
    m.add_mmio(0xC000_0000, 1 << 20, "a bar4")
    m.add_p2pmem(a, 0xC000_0000, 0x1000)
    with pytest.raises(ValueError, match="is a BAR of 'a', not of 'b'"):
        m.add_p2pmem(b, 0xC000_1000, 0x1000)
    with pytest.raises(ValueError, match="has bus_offset"):
        m.add_p2pmem(a, 0xC000_2000, 0x1000, bus_addr=0x1_0000_0000)
    with pytest.raises(ValueError, match="overlaps the bus window"):
        m.add_p2pmem(b, 0xB000_0000, 0x1000, bus_addr=BUS + 0x8000)
    n = len(m.regions)
    for i in range(3):                                            # a has BAR0 and BAR1: 4 more fit
        m.add_p2pmem(a, 0xA000_0000 + i * 0x10_0000, 0x1000)
    m.add_p2pmem(a, 0xA100_0000, 0x1000)
    with pytest.raises(ValueError, match="all 6 BARs"):
        m.add_p2pmem(a, 0xA200_0000, 0x1000)
    assert len(m.regions) == n + 4 and len(m.p2pdma.pagemaps) == 6


def test_bad_arguments_to_the_helpers(impl):
    m = machine(impl)
    a = m.add_device("a")
    pg = m.add_p2pmem(a, BAR, 1 << 20)
    with pytest.raises(TypeError):
        impl.pci_p2pdma_map_type(pg, "a")
    with pytest.raises(TypeError):
        impl.pci_p2pdma_map_type(42, a)
    with pytest.raises(TypeError):
        impl.pci_p2pdma_state(None, a, BAR)
    with pytest.raises(ValueError):
        impl.pci_p2pdma_state(impl.PciP2PdmaMapState(), a, -1)
    with pytest.raises(ValueError, match="not a PCI device"):
        impl.pci_p2pdma_distance(m.add_device("plat", pci=False), a)
    other = impl.Machine(ram=[(0, 1 << 30)], swiotlb=0)
    with pytest.raises(ValueError, match="different machines"):
        impl.pci_p2pdma_map_type(pg, other.add_device("o"))


# ---- core and reference agree on random topologies ------------------------------------------------

@st.composite
def topologies(draw):
    ops = []
    nhb = draw(st.integers(1, 3))
    for i in range(nhb):
        ops.append(("hb", f"h{i}", draw(st.booleans()), draw(st.booleans())))
    parents = [f"h{i}" for i in range(nhb)] + [None]
    for i in range(draw(st.integers(0, 4))):
        ops.append(("sw", f"s{i}", draw(st.sampled_from(parents)), draw(st.booleans())))
        parents.append(f"s{i}")
    for i in range(draw(st.integers(2, 6))):
        ops.append(("dev", f"d{i}", draw(st.sampled_from(parents))))
    return ops, draw(st.booleans())


def run_topology(impl, ops, zen):
    m = machine(impl)
    m.p2pdma.cpu_supports_p2pdma = zen
    devs = []
    for op in ops:
        if op[0] == "hb":
            m.add_host_bridge(op[1], op[2], req_same_host_bridge=op[3])
        elif op[0] == "sw":
            m.add_switch(op[1], op[2], op[3])
        else:
            devs.append(m.add_device(op[1], parent=op[2]))
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dma.KernelWarning)
        for i, p in enumerate(devs):
            pg = m.add_p2pmem(p, 0x1_0000_0000 + i * 0x10_0000, 0x1000, bus_addr=0x4000_0000 + i * 0x10_0000)
            for c in devs:
                t = impl.pci_p2pdma_map_type(pg, c)
                out.append((p.name, c.name, int(t), impl.pci_p2pdma_distance(p, c),
                            p.p2p_node.pci_name, c.p2p_node.pci_name))
                try:
                    c.dma_write(pg.bus_addr, b"\xaa")
                    out.append(("hit", m.mem_read(pg.cpu_phys, 1)))
                    m.mem_write(pg.cpu_phys, b"\0")
                except dma.DmaFault:
                    out.append(("fault", c.name))
    return out, texts(m)


@given(topologies())
def test_core_and_reference_agree(topo):
    ops, zen = topo
    core = run_topology(dma, ops, zen)
    ref = run_topology(reference, ops, zen)
    assert core == ref
    for _p, _c, t, dist, *_ in (r for r in core[0] if len(r) == 6):
        assert (t == NOT_SUPPORTED) == (dist == -1)
        assert t != dma.PCI_P2PDMA_MAP_UNKNOWN and t != NONE


def test_removing_a_provider_releases_its_p2p_memory(impl):
    m = machine(impl)
    sw = m.add_switch("sw0")
    a, b, c = (m.add_device(n, parent=sw) for n in "abc")
    aux = m.add_device("aux", pci=False, parent=c)
    pg = m.add_p2pmem(a, BAR, 1 << 20, bus_addr=BUS)
    keep = m.add_p2pmem(b, BAR + (1 << 24), 1 << 20)
    assert impl.pci_p2pdma_map_type(pg, b) == BUS_ADDR
    m.remove_device(a)
    assert m.p2pdma.pgmap_of(BAR) is None and m.p2pdma.pagemaps == [keep]
    assert impl.pci_p2pdma_state(impl.PciP2PdmaMapState(), b, BAR) == NONE
    assert impl.pci_p2pdma_map_type(pg, b) == NOT_SUPPORTED      # pdev->p2pdma is NULL
    with pytest.raises(dma.DmaFault):
        b.dma_write(BUS, b"x")                                    # no BAR decodes it any more
    c.dma_write(keep.bus_addr, b"still")
    assert m.mem_read(keep.cpu_phys, 5) == b"still"
    with pytest.raises(ValueError, match="child device 'aux'"):
        m.remove_device(c)
    m.remove_device(aux)
    m.remove_device(c)
    assert set(m.devices) == {"b"}


# ---- the p2pmem pool -----------------------------------------------------------------------------

def test_p2pmem_pool_first_fit_newest_chunk_first(impl):
    m = machine(impl)
    a = m.add_device("a")
    m.add_p2pmem(a, BAR, 0x4000, bus_addr=BUS)
    m.add_p2pmem(a, BAR + 0x10000, 0x3000, bus_addr=BUS + 0x10000)
    p2p = a.p2p_node.p2pdma
    assert (p2p.size, p2p.available, p2p.p2pmem_published) == (0x7000, 0x7000, False)
    x = impl.pci_alloc_p2pmem(a, 100)                             # one page from the newest chunk
    assert x == BAR + 0x10000 and p2p.available == 0x6000
    y = impl.pci_alloc_p2pmem(a, 0x2001)                          # 3 pages: no longer fit there
    assert y == BAR
    assert impl.pci_p2pmem_virt_to_bus(a, y + 5) == BUS + 5
    assert impl.pci_p2pmem_virt_to_bus(a, 0) == 0
    assert impl.pci_p2pmem_virt_to_bus(a, 0x1000) == dma.DMA_MAPPING_ERROR     # (phys_addr_t)-1
    assert impl.pci_alloc_p2pmem(a, 0x3000) == 0                  # NULL: no 3 free pages in a row
    assert impl.pci_alloc_p2pmem(a, 0) == 0
    impl.pci_free_p2pmem(a, x, 100)
    assert impl.pci_alloc_p2pmem(a, 0x3000) == BAR + 0x10000
    with pytest.raises(dma.KernelBug):
        impl.pci_free_p2pmem(a, x, 0x4000)                        # runs past the chunk
    with pytest.raises(dma.KernelBug):
        impl.pci_free_p2pmem(a, BAR + 0x3000, 0x1000)             # never allocated
    with pytest.raises(dma.KernelBug):
        impl.pci_free_p2pmem(a, 0x1000, 0x1000)                   # not pool memory
    assert impl.pci_alloc_p2pmem(m.add_device("b"), 4096) == 0     # no p2pdma


def test_p2pmem_find_picks_the_closest_published_provider(impl):
    m = machine(impl)
    hb = m.add_host_bridge("hb0", p2p_allowlisted=True)
    sw = m.add_switch("sw0", parent=hb)
    client = m.add_device("client", parent=sw)
    near1, near2 = m.add_device("near1", parent=sw), m.add_device("near2", parent=sw)
    far = m.add_device("far", parent=hb)
    for i, d in enumerate((near1, near2, far)):
        m.add_p2pmem(d, BAR + i * 0x10_0000, 0x10000)
    assert impl.pci_p2pmem_find(client) is None                   # nothing published
    impl.pci_p2pmem_publish(far, True)
    assert impl.pci_p2pmem_find(client) is far
    impl.pci_p2pmem_publish(near1, True)
    impl.pci_p2pmem_publish(near2, True)
    picks = {impl.pci_p2pmem_find(client).name for _ in range(40)}
    assert picks == {"near1", "near2"}                           # ties broken at random
    assert impl.pci_p2pmem_find_many([client, far]) in (near1, near2, far)
    sgl = impl.pci_p2pmem_alloc_sgl(near1, 0x2000)
    assert len(sgl) == 1 and sgl[0].phys == BAR and sgl[0].length == 0x2000
    impl.pci_p2pmem_free_sgl(near1, sgl)
    assert near1.p2p_node.p2pdma.available == 0x10000


def test_p2pmem_find_sequence_is_the_same_on_both_backends():
    def picks(impl):
        m = machine(impl)
        sw = m.add_switch("sw0")
        c = m.add_device("c", parent=sw)
        provs = [m.add_device(f"p{i}", parent=sw) for i in range(5)]
        for i, p in enumerate(provs):
            m.add_p2pmem(p, BAR + i * 0x10_0000, 0x1000)
            impl.pci_p2pmem_publish(p, True)
        return [impl.pci_p2pmem_find(c).name for _ in range(30)]
    assert picks(dma) == picks(reference)


def test_provider_without_pages_vfio_style(impl):
    """pcim_p2pdma_provider(): a BAR provider with no ZONE_DEVICE pages (VFIO dma-buf exporters)."""
    m = machine(impl)
    sw = m.add_switch("sw0", parent=m.add_host_bridge("hb0"))
    gpu, nic = m.add_device("gpu", parent=sw), m.add_device("nic", parent=sw)
    mem = m.add_p2pmem(gpu, BAR, 1 << 20, bus_addr=BUS, pages=False)
    assert isinstance(mem, impl.P2PdmaProvider) and mem.bus_offset == BUS - BAR
    assert m.p2pdma.pagemaps == [] and m.p2pdma.pgmap_of(BAR) is None
    assert gpu.p2p_node.p2pdma.size == 0                          # no pool either
    assert impl.pci_p2pdma_state(impl.PciP2PdmaMapState(), nic, BAR) == NONE
    assert impl.pci_p2pdma_map_type(mem, nic) == BUS_ADDR
    assert impl.pci_p2pdma_bus_addr_map(mem, BAR + 0x10) == BUS + 0x10
    nic.dma_write(BUS + 0x10, b"dmabuf")                          # the BAR decodes it all the same
    assert m.mem_read(BAR + 0x10, 6) == b"dmabuf"
    assert m.add_p2pmem(gpu, BAR, 0x1000, bus_addr=BUS, pages=False) is mem
    pg = m.add_p2pmem(gpu, BAR + 0x1000, 0x1000, bus_addr=BUS + 0x1000)   # pages in the same BAR
    assert pg.mem is mem and m.p2pdma.pgmap_of(BAR + 0x1000) is pg


# ---- the mapping API on P2P memory (dma-direct devices) ------------------------------------------

TO, FROM, BIDI = dma.DMA_TO_DEVICE, dma.DMA_FROM_DEVICE, dma.DMA_BIDIRECTIONAL


def test_dma_map_sg_gives_bus_addresses_for_bus_addr_segments(impl):
    m, gpu, nic, far, pg = bus_setup(impl)
    ram = m.alloc_pages(2)
    sg = impl.ScatterList([(ram, 0x1000), (BAR + 0x3000, 0x2000), (ram + 0x1000, 0x800)])
    assert impl.dma_map_sg(nic, sg, 3, FROM) == 3                 # dma-direct never merges
    assert [impl.sg_dma_is_bus_address(e) for e in sg] == [False, True, False]
    assert sg.dma_segments() == [(ram, 0x1000), (BUS + 0x3000, 0x2000), (ram + 0x1000, 0x800)]
    for e, byte in zip(sg, b"ABC", strict=True):                  # the device fills every segment
        nic.dma_write(e.dma_address, bytes([byte]) * e.dma_length)
    assert m.mem_read(BAR + 0x3000, 0x2000) == b"B" * 0x2000      # in the provider's BAR store
    assert m.mem_read(ram, 0x1000) == b"A" * 0x1000
    impl.dma_unmap_sg(nic, sg, 3, FROM)
    assert not any(impl.sg_dma_is_bus_address(e) for e in sg)
    assert texts(m) == []


def test_dma_map_sg_thru_host_bridge_uses_the_cpu_address(impl):
    m, gpu, nic, far, pg = bus_setup(impl)
    sg = impl.ScatterList([(BAR + 0x100, 0x100)])
    assert impl.dma_map_sg(far, sg, 1, TO) == 1                   # far: below another Root Port
    assert sg.dma_segments() == [(BAR + 0x100, 0x100)] and not impl.sg_dma_is_bus_address(sg[0])
    m.mem_write(BAR + 0x100, b"cmb data")
    assert far.dma_read(sg[0].dma_address, 8) == b"cmb data"      # via the host bridge
    with pytest.raises(dma.DmaFault):
        far.dma_read(BUS + 0x100, 8)                              # the bus address means nothing there
    impl.dma_unmap_sg(far, sg, 1, TO)


def test_dma_map_phys_mmio_for_thru_host_bridge(impl):
    """How HMM/VFIO/the block layer map THRU_HOST_BRIDGE memory: dma_map_phys(..., DMA_ATTR_MMIO)."""
    m, gpu, nic, far, pg = bus_setup(impl)
    mem = pg.mem
    assert impl.pci_p2pdma_map_type(mem, far) == THRU
    addr = impl.dma_map_phys(far, BAR + 0x2000, 0x1000, FROM, dma.DMA_ATTR_MMIO)
    assert not impl.dma_mapping_error(far, addr)
    assert addr == BAR + 0x2000                                   # phys as-is, never bounced
    far.dma_write(addr, b"written by far")
    assert m.mem_read(BAR + 0x2000, 14) == b"written by far"
    impl.dma_unmap_phys(far, addr, 0x1000, FROM, dma.DMA_ATTR_MMIO)
    # BUS_ADDR needs no mapping at all: the caller programs pci_p2pdma_bus_addr_map()
    assert impl.pci_p2pdma_map_type(mem, nic) == BUS_ADDR
    nic.dma_write(impl.pci_p2pdma_bus_addr_map(mem, BAR + 0x2000), b"written by nic")
    assert m.mem_read(BAR + 0x2000, 14) == b"written by nic"


def test_dma_map_sg_not_supported_is_eremoteio(impl):
    m = machine(impl)
    a = m.add_device("a", parent=m.add_host_bridge("h0"))
    b = m.add_device("b", parent=m.add_host_bridge("h1"))
    m.add_p2pmem(a, BAR, 1 << 20, bus_addr=BUS)
    sg = impl.ScatterList([(0x1000, 0x1000), (BAR, 0x1000)])
    with pytest.warns(dma.KernelWarning):
        assert impl.dma_map_sg_attrs(b, sg, 2, TO, 0) == 0        # dma_map_sg() hides the errno
    assert impl.dma_map_sgtable(b, sg, TO, 0) == -dma.EREMOTEIO   # cached: no new warnings
    assert sum("do not share an upstream bridge" in t for t in texts(m)) == 1


def blk_map(impl, dev, segs, dir):
    """What blk_rq_dma_map_iter_start()/next() do: the first segment's P2P state decides for all."""
    state = impl.PciP2PdmaMapState()
    t = impl.pci_p2pdma_state(state, dev, segs[0][0])
    if t == BUS_ADDR:
        return t, [(impl.pci_p2pdma_bus_addr_map(state, p), n) for p, n in segs]
    if t not in (NONE, THRU):
        return t, None                                            # BLK_STS_INVAL
    attrs = dma.DMA_ATTR_MMIO if t == THRU else 0
    mapped = [(impl.dma_map_phys(dev, p, n, dir, attrs), n) for p, n in segs]
    if any(impl.dma_mapping_error(dev, a) for a, _ in mapped):
        return t, None                                            # BLK_STS_RESOURCE
    return t, mapped


def test_block_layer_style_mapping_of_a_cmb_request(impl):
    m, gpu, nic, far, pg = bus_setup(impl)
    segs = [(BAR + 0x10000, 0x1000), (BAR + 0x30000, 0x2000)]
    t, mapped = blk_map(impl, nic, segs, TO)
    assert t == BUS_ADDR and mapped == [(BUS + 0x10000, 0x1000), (BUS + 0x30000, 0x2000)]
    t, mapped = blk_map(impl, far, segs, TO)
    assert t == THRU and mapped == segs
    m.mem_write(BAR + 0x30000, b"payload")
    assert far.dma_read(mapped[1][0], 7) == b"payload" == nic.dma_read(BUS + 0x30000, 7)


def test_peer_requests_of_an_iommu_device_bypass_the_iommu_below_a_switch(impl):
    """With ACS off the switch routes a peer's bus address before the IOMMU ever sees it."""
    for acs in (False, True):
        m = machine(impl)
        iommu = m.add_iommu()
        sw = m.add_switch("sw0", parent=m.add_host_bridge("hb0", p2p_allowlisted=True), acs_redirect=acs)
        gpu = m.add_device("gpu", parent=sw)
        nic = m.add_device("nic", parent=sw, iommu=iommu, domain_type="blocked")
        m.add_p2pmem(gpu, BAR, 1 << 20, bus_addr=BUS)
        if not acs:
            nic.dma_write(BUS + 0x20, b"around the IOMMU")
            assert m.mem_read(BAR + 0x20, 16) == b"around the IOMMU"
        else:
            with pytest.raises(dma.IommuFault):                   # redirected up to the IOMMU
                nic.dma_write(BUS + 0x20, b"x")
        with pytest.raises(dma.IommuFault):                       # RAM still goes through it
            nic.dma_write(0x1000, b"x")


# ---- behind an IOMMU (dma-iommu) and the dma-buf example ------------------------------------------

HAVE_DMA_IOMMU = hasattr(dma, "dma_iova_try_alloc") and hasattr(reference, "dma_iova_try_alloc")
needs_dma_iommu = pytest.mark.skipif(not HAVE_DMA_IOMMU, reason="needs the dma-iommu branch")


@needs_dma_iommu
def test_iommu_dma_map_sg_with_p2p_segments(impl):
    for acs in (False, True):
        m = machine(impl)
        iommu = m.add_iommu()
        sw = m.add_switch("sw0", parent=m.add_host_bridge("hb0", p2p_allowlisted=True), acs_redirect=acs)
        gpu = m.add_device("gpu", parent=sw)
        nic = m.add_device("nic", parent=sw, iommu=iommu)
        m.add_p2pmem(gpu, BAR, 1 << 20, bus_addr=BUS)
        ram = m.alloc_pages(1)
        sg = impl.ScatterList([(BAR + 0x4000, 0x1000), (ram, 0x1000)])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", dma.KernelWarning)    # the ACS report, when set
            n = impl.dma_map_sg(nic, sg, 2, BIDI)
        if not acs:                    # a bus address in its own segment, no IOVA for it
            assert n == 2 and impl.sg_dma_is_bus_address(sg[0])
            assert sg[0].dma_address == BUS + 0x4000 and not impl.sg_dma_is_bus_address(sg[1])
            bar_addr, ram_addr = sg[0].dma_address, sg[1].dma_address
        else:                          # IOVAs like any memory: both pages merge into one segment
            assert n == 1 and sg.dma_segments()[0][1] == 0x2000
            assert not impl.sg_dma_is_bus_address(sg[0])
            bar_addr, ram_addr = sg[0].dma_address, sg[0].dma_address + 0x1000
        nic.dma_write(bar_addr, b"to the BAR")
        nic.dma_write(ram_addr, b"to the RAM")
        assert m.mem_read(BAR + 0x4000, 10) == b"to the BAR" and m.mem_read(ram, 10) == b"to the RAM"
        impl.dma_unmap_sg(nic, sg, 2, BIDI)
        assert not impl.sg_dma_is_bus_address(sg[0])


def load_example():
    import importlib.util
    import pathlib
    path = pathlib.Path(__file__).parent.parent / "examples" / "p2p_dmabuf.py"
    spec = importlib.util.spec_from_file_location("p2p_dmabuf", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@needs_dma_iommu
def test_example_p2p_dmabuf():
    ex = load_example()
    m, r = ex.main(verbose=False)
    assert r["nic"].segments == [(ex.BAR_BUS + 0x10_0000, 0x6000)]            # bus address
    assert r["nvme"].segments == [(ex.BAR_CPU + 0x10_0000, 0x6000)]           # CPU address, MMIO
    assert len(r["rdma"].segments) == 1 and r["rdma"].state is not None       # one IOVA range
    assert r["fpga"] == -dma.EINVAL
    for name in ("nic", "nvme", "rdma"):                                      # nothing left mapped
        m.remove_device(m.devices[name])
    assert not any(k == "DmaDebugWarning" for k, _ in m.warnings_log)


@needs_dma_iommu
def test_example_two_ranges_collide_behind_an_iommu():
    """dma_buf_phys_vec_to_sgt() links every range at IOVA offset 0 (as the kernel helper does)."""
    ex = load_example()
    two = [(ex.BAR_CPU, 0x2000), (ex.BAR_CPU + 0x80_0000, 0x1000)]
    m, r = ex.main(verbose=False, phys_vec=two)
    assert [n for _, n in r["nic"].segments] == [0x2000, 0x1000]
    assert len(r["nvme"].segments) == 2
    assert r["rdma"] == -dma.EADDRINUSE                                       # the second link
    m.remove_device(m.devices["rdma"])                                        # unwound: no leak
    assert not any(k == "DmaDebugWarning" for k, _ in m.warnings_log)

"""Embedding helpers shared by the compiled core and the reference model (pure Python).

``Machine.add_ram`` / ``remove_ram`` in both backends call these, so the validation messages
and the "is this RAM still in use" rules are one piece of code.
"""

from __future__ import annotations

from .constants import PAGE_SIZE

INVALID_PHYS_ADDR = (1 << 64) - 1


def ram_buffer_nbytes(buffer, base: int) -> int:
    """Validate an embedder's RAM buffer for ``Machine.add_ram``; its size in bytes.

    TypeError: not a buffer-protocol object, or read-only. ValueError: not C-contiguous, or
    its size is not a non-zero multiple of PAGE_SIZE (each 4 KiB of the buffer backs one
    page frame), or ``base`` is not page aligned.
    """
    if isinstance(buffer, str):
        raise TypeError("add_ram: buffer must be a writable buffer-protocol object, not str")
    try:
        mv = memoryview(buffer)
    except TypeError:
        raise TypeError("add_ram: buffer must be a writable buffer-protocol object "
                        f"(bytearray, numpy array, mmap, memoryview), not {type(buffer).__name__}") from None
    with mv:
        if mv.readonly:
            raise TypeError(f"add_ram: the {type(buffer).__name__} buffer is read-only")
        if not mv.c_contiguous:
            raise ValueError("add_ram: buffer must be C-contiguous")
        n = mv.nbytes
    if n == 0 or n % PAGE_SIZE:
        raise ValueError(f"add_ram: buffer size {n:#x} must be a non-zero multiple of PAGE_SIZE")
    if base % PAGE_SIZE:
        raise ValueError(f"add_ram: base {base:#x} must be page aligned")
    return n


def ram_users(machine, start: int, size: int) -> list[str]:
    """What still uses physical [start, start+size): page-allocator allocations, IOMMU
    page-table leaves mapping it, swiotlb slots bouncing it, dma-debug entries (the only record
    of dma-direct mappings, as in the kernel). An empty list: nothing does."""
    end = start + size
    users: list[str] = []

    def hit(a: int, n: int) -> bool:
        return a < end and start < a + max(n, 1)

    for s, _n, _name, allocatable in machine.mem.ext_ram_list():
        if s == start and allocatable:
            free = sum(max(0, min(end, fs + fn) - max(start, fs))
                       for fs, fn in machine.mem.free_extents_list())
            if free != size:
                users.append(f"{(size - free) // PAGE_SIZE} page(s) allocated from it (alloc_pages, "
                             "page tables, swiotlb or coherent buffers)")
    for mmu in machine.iommus:
        for d in mmu.domains:
            if d.pgtable is None or d.freed:
                continue
            for iova, (phys, n, _prot) in sorted(d.pgtable.get_state()["mappings"].items()):
                if hit(phys, n):
                    users.append(f"IOMMU domain {d.id} maps IOVA {iova:#x} to {phys:#x}")
                    break
    pools = {id(machine.swiotlb): machine.swiotlb}
    for dev in machine.devices.values():
        pools.setdefault(id(dev.dma_io_tlb_mem), dev.dma_io_tlb_mem)
    for pool in pools.values():
        if pool is None:
            continue
        for idx, slot in sorted(pool.get_state()["slots"].items()):
            orig = slot[0]
            if orig != INVALID_PHYS_ADDR and hit(orig, 1):
                users.append(f"swiotlb slot {idx} bounces {orig:#x}")
                break
    for e in machine.dma_debug.entries():
        if hit(e["paddr"], e["size"]):
            users.append(f"{e['device']} has a {e['type']} mapping of {e['paddr']:#x}+{e['size']:#x} "
                         "(dma-debug)")
            break
    return users


def check_ram_removable(machine, start: int) -> None:
    """BufferError when embedder RAM at ``start`` is still in use (see ram_users)."""
    for s, n, name, _alloc in machine.mem.ext_ram_list():
        if s == start:
            users = ram_users(machine, s, n)
            if users:
                raise BufferError(f"remove_ram: {name!r} ({s:#x}+{n:#x}) is still in use: "
                                  + "; ".join(users))
            return
    raise ValueError(f"no embedder RAM (Machine.add_ram) starts at {start:#x}")

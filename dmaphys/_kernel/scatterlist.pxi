# Models include/linux/scatterlist.h and lib/scatterlist.c: struct scatterlist entries
# (page, offset, length, dma_address, dma_length, dma_flags) and struct sg_table
# (sgl, nents, orig_nents). dma.ScatterList is both the list and its sg_table.
#
# Declarations (C types, cdef class fields, cdef signatures) live in the C face, scatterlist.pxd.


cdef class ScatterList:
    """A scatterlist built from (phys, length) pairs, and its sg_table (nents, orig_nents).

    ``ScatterList([(phys, length), ...])``; entry i is ``sgl[i]`` with ``phys``, ``page_phys``,
    ``offset``, ``length``, ``dma_address``, ``dma_length`` as the kernel fills them.

    Mirrors struct sg_table and its struct scatterlist array (include/linux/scatterlist.h), filled
    like sg_alloc_table() + sg_set_page() (lib/scatterlist.c). ``len()`` is orig_nents; indexing
    (negative indexes count from the end) raises IndexError out of range. Raises ValueError for no
    entries, a length outside 1..2**32-1 or an entry that wraps the address space, TypeError /
    ValueError for entries that are not (int, int) pairs.
    """

    def __cinit__(self, entries):
        cdef scatterlist s
        for item in entries:
            phys, length = item
            phys = _u64(phys, "phys")
            s.page_phys = phys & ~(<u64>PAGE_SIZE - 1)
            s.offset = phys & (PAGE_SIZE - 1)
            s.length = _u64(length, "length")
            if s.length == 0 or s.length > 0xFFFFFFFF:
                raise ValueError("scatterlist entry length must be 1..2^32-1 (unsigned int)")
            if s.page_phys + s.offset + s.length - 1 < s.page_phys:
                raise ValueError("scatterlist entry wraps the address space")
            s.dma_address = 0
            s.dma_length = 0
            s.dma_flags = 0
            self.sg.push_back(s)
        if self.sg.empty():
            raise ValueError("a scatterlist needs at least one entry")
        self.orig_nents = <int>self.sg.size()
        self.nents = self.orig_nents

    def __len__(self):
        return <Py_ssize_t>self.sg.size()

    def __getitem__(self, Py_ssize_t i):
        if i < 0:
            i += <Py_ssize_t>self.sg.size()
        if not 0 <= i < <Py_ssize_t>self.sg.size():
            raise IndexError(i)
        return ScatterlistEntry(self, i)

    def __iter__(self):
        for i in range(self.sg.size()):
            yield ScatterlistEntry(self, i)

    def dma_segments(self):
        """[(sg_dma_address, sg_dma_len)] of the first ``nents`` entries (the mapped segments).

        Models for_each_sgtable_dma_sg() with sg_dma_address() / sg_dma_len()
        (include/linux/scatterlist.h). Returns a list of int pairs ((0, 0) pairs before
        mapping, when nents is still orig_nents). Raises nothing.
        """
        return [(self.sg[i].dma_address, self.sg[i].dma_length) for i in range(self.nents)]

    def __repr__(self):
        return f"<dmaphys.ScatterList orig_nents={self.orig_nents} nents={self.nents}>"


cdef class ScatterlistEntry:
    """One struct scatterlist (a view into its ScatterList).

    Mirrors struct scatterlist (include/linux/scatterlist.h); the fields are read-only properties
    read from the list. ``ScatterlistEntry(sg, index)`` is ``sg[index]``: raises IndexError for an
    index out of range, TypeError for a non-ScatterList.
    """

    def __cinit__(self, ScatterList table not None, Py_ssize_t index):
        if index < 0:
            index += <Py_ssize_t>table.sg.size()
        if not 0 <= index < <Py_ssize_t>table.sg.size():
            raise IndexError(f"scatterlist index {index} out of range (orig_nents {table.sg.size()})")
        self.table = table
        self.index = index

    @property
    def phys(self):
        """sg_phys(sg): page_phys + offset (include/linux/scatterlist.h)."""
        return self.table.sg[self.index].page_phys + self.table.sg[self.index].offset

    @property
    def page_phys(self):
        """page_to_phys(sg_page(sg)): the physical address of the entry's page."""
        return self.table.sg[self.index].page_phys

    @property
    def offset(self):
        """sg->offset: the byte offset in that page."""
        return self.table.sg[self.index].offset

    @property
    def length(self):
        """sg->length: the CPU-side length in bytes."""
        return self.table.sg[self.index].length

    @property
    def dma_address(self):
        """sg_dma_address(sg): the bus address once mapped (0 before)."""
        return self.table.sg[self.index].dma_address

    @property
    def dma_length(self):
        """sg_dma_len(sg): the mapped length (0 before mapping or for a merged-away entry)."""
        return self.table.sg[self.index].dma_length

    @property
    def dma_flags(self):
        """sg->dma_flags: SG_DMA_BUS_ADDRESS / SG_DMA_SWIOTLB bits."""
        return self.table.sg[self.index].dma_flags

    def __repr__(self):
        return (f"<sg {self.index}: phys={self.phys:#x} len={self.length:#x} "
                f"dma={self.dma_address:#x}/{self.dma_length:#x}>")


def sg_dma_is_bus_address(ScatterlistEntry sg not None):
    """sg_dma_is_bus_address(): the entry holds a PCI bus address (P2PDMA), not an IOVA/DMA address.

    Models include/linux/scatterlist.h:sg_dma_is_bus_address(). Returns True when SG_DMA_BUS_ADDRESS
    is set, else False. Raises TypeError for a non-ScatterlistEntry.
    """
    return bool(sg.table.sg[sg.index].dma_flags & SG_DMA_BUS_ADDRESS)


def sg_dma_is_swiotlb(ScatterlistEntry sg not None):
    """sg_dma_is_swiotlb(): dma-iommu mapped this list entry by entry through swiotlb.

    Models include/linux/scatterlist.h:sg_dma_is_swiotlb(). Returns True when SG_DMA_SWIOTLB is set,
    else False. Raises TypeError for a non-ScatterlistEntry.
    """
    return bool(sg.table.sg[sg.index].dma_flags & SG_DMA_SWIOTLB)


__all__ += ["ScatterList", "ScatterlistEntry", "sg_dma_is_bus_address", "sg_dma_is_swiotlb"]

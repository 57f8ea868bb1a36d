"""The C-level constants mirror dmaphys.constants (and the kernel's values)."""

import errno

import dmaphys as dma
from dmaphys import _core


def test_c_constants_match_python():
    for name, value in _core._c_constants().items():
        assert getattr(dma, name) == value, name


def test_kernel_values():
    assert (dma.DMA_BIDIRECTIONAL, dma.DMA_TO_DEVICE, dma.DMA_FROM_DEVICE, dma.DMA_NONE) == (0, 1, 2, 3)
    assert dma.DMA_ATTR_MMIO == 1 << 10 and dma.DMA_ATTR_SKIP_CPU_SYNC == 0x20
    assert dma.DMA_ATTR_ALL == 0x7F6          # bits 1, 2, 4..10
    assert dma.DMA_MAPPING_ERROR == 2**64 - 1
    assert dma.DMA_BIT_MASK(64) == 2**64 - 1 and dma.DMA_BIT_MASK(32) == 0xFFFFFFFF
    assert dma.DMA_BIT_MASK(0) == 0
    assert (dma.IOMMU_READ, dma.IOMMU_WRITE, dma.IOMMU_CACHE, dma.IOMMU_NOEXEC,
            dma.IOMMU_MMIO, dma.IOMMU_PRIV) == (1, 2, 4, 8, 16, 32)
    assert [int(x) for x in dma.PciP2PdmaMapType] == [0, 1, 2, 3, 4]
    assert dma.PCI_P2PDMA_MAP_BUS_ADDR == 3 and dma.PCI_P2PDMA_MAP_THRU_HOST_BRIDGE == 4
    assert (dma.ENOMEM, dma.EINVAL, dma.EIO, dma.EREMOTEIO) == (errno.ENOMEM, errno.EINVAL, errno.EIO, 121)


def test_core_and_reference_export_the_same_names():
    import dmaphys.reference as ref
    assert set(_core.__all__) == set(ref.__all__)

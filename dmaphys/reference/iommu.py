"""Reference model of drivers/iommu/iommu.c. PLACEHOLDER (foundation skeleton)."""

from __future__ import annotations

__all__: list[str] = []


class Iommu:
    def __init__(self, machine, fmt, strict, iotlb, **kwargs):
        raise NotImplementedError("the IOMMU path is not built yet")


def iommu_device_access(dev, iova, n, write, data):
    raise NotImplementedError("the IOMMU path is not built yet")

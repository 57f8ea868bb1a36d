"""Reference model of the numpy batch entry points (mirrors _kernel/batch.pxi).

The semantics *are* the per-call reference API applied to each element in order: every batch
function here validates the whole batch (the core's messages), then loops over the per-call
function with the machine's warning flush deferred to the end of the batch, and records where
it stopped on an exception (``exc.batch_index``, ``exc.batch_result``). See batch.pxi for the
contract.
"""

from __future__ import annotations

import contextlib

import numpy as np

from ..errors import KernelBug
from . import dma_iommu as _dma_iova
from . import iommu as _iommu
from . import machine as _machine
from . import mapping as _mapping
from ._util import u64

__all__ = ["dma_map_phys_batch", "dma_mapping_error_batch", "dma_unmap_phys_batch",
           "dma_read_batch", "dma_write_batch", "iommu_iova_to_phys_batch",
           "dma_read_ragged_batch", "dma_write_ragged_batch", "mem_read_batch", "mem_write_batch",
           "dma_sync_single_for_cpu_batch", "dma_sync_single_for_device_batch", "dma_iova_link_batch",
           "dma_iova_alloc_link_sync_batch", "dma_iova_destroy_batch",
           "dma_read_compare_ragged_batch", "mem_read_compare_batch"]


# ---- argument conversion (whole batch, before any state change) --------------------------------
def _batch_u64_array(arr, what: str) -> np.ndarray:
    if isinstance(arr, (str, bytes)):
        raise TypeError(f"{what} must be a 1-D integer array, not {type(arr).__name__}")
    try:
        a = np.asarray(arr)
    except (ValueError, OverflowError) as e:
        raise TypeError(f"{what} must be a 1-D integer array ({e})") from None
    if a.size == 0 and not isinstance(arr, np.ndarray):
        a = a.astype(np.uint64)                 # an empty sequence (numpy makes it float64)
    if a.dtype.kind not in "ui":
        raise TypeError(f"{what} must be a 1-D integer array, not dtype {a.dtype}")
    if a.ndim != 1:
        raise ValueError(f"{what} must be a 1-D array, not shape {a.shape}")
    if a.dtype.kind == "i" and a.shape[0] and a.min() < 0:
        raise ValueError(f"{what}[{int(np.argmax(a < 0))}] is negative")
    return np.ascontiguousarray(a, dtype=np.uint64)


def _batch_sizes(sizes, n: int, what: str) -> list[int]:
    """A scalar (every element) or a 1-D array of n entries, as a list of n ints."""
    if not isinstance(sizes, (str, bytes)) and np.ndim(sizes) == 0:
        return [u64(sizes, what)] * n
    a = _batch_u64_array(sizes, what)
    if a.shape[0] != n:
        raise ValueError(f"{what} has {a.shape[0]} entries for {n} addresses")
    return [int(x) for x in a]


def _batch_out_u64(out, n: int, what: str) -> np.ndarray:
    """An ``out=`` array: a writable C-contiguous 1-D uint64 ndarray (not a subclass) of n entries."""
    if type(out) is not np.ndarray:
        raise TypeError(f"{what} must be a numpy.ndarray, not {type(out).__name__}")
    if out.dtype != np.uint64 or out.ndim != 1 or not out.flags.c_contiguous:
        raise TypeError(f"{what} must be a C-contiguous 1-D uint64 array, not {out.dtype} "
                        f"of shape {out.shape}")
    if not out.flags.writeable:
        raise ValueError(f"{what} is read-only")
    if out.shape[0] != n:
        raise ValueError(f"{what} has {out.shape[0]} entries for {n} addresses")
    return out


def _batch_fail(exc: BaseException, i: int, done) -> None:
    try:
        exc.batch_index = i  # type: ignore[attr-defined]
        exc.batch_result = done  # type: ignore[attr-defined]
    except AttributeError:
        pass


def _noop() -> None:
    pass


@contextlib.contextmanager
def _deferred_warnings(machine):
    """Run per-call functions with Machine.flush_warnings deferred to the end of the batch."""
    machine.flush_warnings = _noop          # the instance attribute shadows the method
    try:
        yield
    finally:
        del machine.flush_warnings
        machine.flush_warnings()


# ---- kernel/dma/mapping.c --------------------------------------------------------------------------
def dma_map_phys_batch(dev, phys, sizes, dir, attrs=0, out=None) -> np.ndarray:
    """Reference of dmaphys.dma_map_phys_batch: dma_map_phys() per element, in order.

    Reference twin of dmaphys._core.dma_map_phys_batch; same returns and raises.
    """
    dev = _mapping._dev(dev)
    p = _batch_u64_array(phys, "phys")
    s = _batch_sizes(sizes, p.shape[0], "size")
    d, a = _mapping._dir(dir), _mapping._attrs(attrs)
    _mapping.bug_on_dir(d, "dma_map_phys")
    ps = [int(x) for x in p]
    for i in range(len(ps)):
        if s[i] and ps[i] + s[i] - 1 >= 1 << 64:
            raise ValueError(f"phys[{i}] {ps[i]:#x} + size {s[i]:#x} wraps the 64-bit address space")
    out = np.empty(len(ps), dtype=np.uint64) if out is None else _batch_out_u64(out, len(ps), "out")
    i = 0
    with _deferred_warnings(dev.machine):
        try:
            for i in range(len(ps)):
                out[i] = _mapping.dma_map_phys(dev, ps[i], s[i], d, a)
        except BaseException as e:
            _batch_fail(e, i, out[:i].copy())
            raise
    return out


def dma_mapping_error_batch(dev, dma_addrs) -> np.ndarray:
    """Reference of dmaphys.dma_mapping_error_batch: dma_mapping_error() per element.

    Reference twin of dmaphys._core.dma_mapping_error_batch; same returns and raises.
    """
    dev = _mapping._dev(dev)
    ad = _batch_u64_array(dma_addrs, "dma_addr")
    out = np.empty(ad.shape[0], dtype=np.int32)
    i = 0
    with _deferred_warnings(dev.machine):
        try:
            for i in range(ad.shape[0]):
                out[i] = _mapping.dma_mapping_error(dev, int(ad[i]))
        except BaseException as e:
            _batch_fail(e, i, out[:i].copy())
            raise
    return out


def dma_unmap_phys_batch(dev, dma_addrs, sizes, dir, attrs=0) -> None:
    """Reference of dmaphys.dma_unmap_phys_batch: dma_unmap_phys() per element, in order.

    Reference twin of dmaphys._core.dma_unmap_phys_batch; same returns and raises.
    """
    dev = _mapping._dev(dev)
    ad = _batch_u64_array(dma_addrs, "addr")
    s = _batch_sizes(sizes, ad.shape[0], "size")
    d, a = _mapping._dir(dir), _mapping._attrs(attrs)
    _mapping.bug_on_dir(d, "dma_unmap_phys")
    i = 0
    with _deferred_warnings(dev.machine):
        try:
            for i in range(ad.shape[0]):
                _mapping.dma_unmap_phys(dev, int(ad[i]), s[i], d, a)
        except BaseException as e:
            _batch_fail(e, i, None)
            raise


# ---- the device on its bus ------------------------------------------------------------------------
def _device_arg(dev) -> None:
    if not isinstance(dev, _mapping.Device):
        raise TypeError(f"dev must be a Device, not {type(dev).__name__}")


def dma_read_batch(dev, addrs, size) -> np.ndarray:
    """Reference of dmaphys.dma_read_batch: ``dev.dma_read(addrs[i], size)`` for each i.

    Reference twin of dmaphys._core.dma_read_batch; same returns and raises.
    """
    _device_arg(dev)
    a = _batch_u64_array(addrs, "addrs")
    sz = u64(size, "size")
    out = np.empty((a.shape[0], sz), dtype=np.uint8)
    i = 0
    with _deferred_warnings(dev.machine):
        try:
            for i in range(a.shape[0]):
                out[i] = np.frombuffer(dev.dma_read(int(a[i]), sz), dtype=np.uint8)
        except BaseException as e:
            _batch_fail(e, i, out[:i].copy())
            raise
    return out


def dma_write_batch(dev, addrs, data) -> None:
    """Reference of dmaphys.dma_write_batch: ``dev.dma_write(addrs[i], data[i])`` for each i.

    Reference twin of dmaphys._core.dma_write_batch; same returns and raises.
    """
    _device_arg(dev)
    a = _batch_u64_array(addrs, "addrs")
    if isinstance(data, (str, bytes, bytearray, memoryview)):
        raise TypeError(f"data must be a 2-D uint8 array (n x size), not {type(data).__name__}")
    d = np.asarray(data)
    if d.dtype != np.uint8:
        raise TypeError(f"data must be a 2-D uint8 array (n x size), not dtype {d.dtype}")
    if d.ndim != 2:
        raise ValueError(f"data must be a 2-D uint8 array (n x size), not shape {d.shape}")
    if d.shape[0] != a.shape[0]:
        raise ValueError(f"data has {d.shape[0]} rows for {a.shape[0]} addresses")
    d = np.ascontiguousarray(d)
    i = 0
    with _deferred_warnings(dev.machine):
        try:
            for i in range(a.shape[0]):
                dev.dma_write(int(a[i]), d[i].tobytes())
        except BaseException as e:
            _batch_fail(e, i, None)
            raise


# ---- drivers/iommu/iommu.c ------------------------------------------------------------------------
def iommu_iova_to_phys_batch(domain, iovas) -> np.ndarray:
    """Reference of dmaphys.iommu_iova_to_phys_batch: iommu_iova_to_phys() per element.

    Reference twin of dmaphys._core.iommu_iova_to_phys_batch; same returns and raises.
    """
    domain = _iommu._domain_arg(domain)
    a = _batch_u64_array(iovas, "iovas")
    out = np.empty(a.shape[0], dtype=np.uint64)
    for i in range(a.shape[0]):
        out[i] = _iommu.iommu_iova_to_phys(domain, int(a[i]))
    return out


# ==== ring batches (see batch.pxi): variable sizes, CPU loads/stores, syncs, two-step links ======
def _ragged_data(data, total: int) -> np.ndarray:
    if isinstance(data, str):
        raise TypeError("data must be a 1-D uint8 array or bytes-like, not str")
    if isinstance(data, (bytes, bytearray, memoryview)):
        d = np.frombuffer(data, dtype=np.uint8)
    else:
        d = np.asarray(data)
    if d.dtype != np.uint8:
        raise TypeError(f"data must be a 1-D uint8 array, not dtype {d.dtype}")
    if d.ndim != 1:
        raise ValueError(f"data must be a 1-D uint8 array (the elements back to back), not shape {d.shape}")
    if d.shape[0] != total:
        raise ValueError(f"data has {d.shape[0]} bytes for sizes totalling {total}")
    return np.ascontiguousarray(d)


def _ragged_total(s: list[int]) -> int:
    total = sum(s)
    if total >= 1 << 64:
        raise ValueError("sizes overflow 64 bits")
    return total


def _ragged_read(machine, n: int, s: list[int], read_one) -> np.ndarray:
    """read_one(i) -> bytes for each element, back to back; stops at an exception."""
    out = np.empty(_ragged_total(s), dtype=np.uint8)
    off = i = 0
    with _deferred_warnings(machine):
        try:
            for i in range(n):
                out[off:off + s[i]] = np.frombuffer(read_one(i), dtype=np.uint8)
                off += s[i]
        except BaseException as e:
            _batch_fail(e, i, out[:off].copy())
            raise
    return out


def _ragged_write(machine, n: int, s: list[int], data, write_one) -> None:
    d = _ragged_data(data, _ragged_total(s))
    off = i = 0
    with _deferred_warnings(machine):
        try:
            for i in range(n):
                write_one(i, d[off:off + s[i]].tobytes())
                off += s[i]
        except BaseException as e:
            _batch_fail(e, i, None)
            raise


def dma_read_ragged_batch(dev, addrs, sizes) -> np.ndarray:
    """Reference of dmaphys.dma_read_ragged_batch: ``dev.dma_read(addrs[i], sizes[i])`` back to back.

    Reference twin of dmaphys._core.dma_read_ragged_batch: same returns and raises.
    """
    _device_arg(dev)
    a = _batch_u64_array(addrs, "addrs")
    s = _batch_sizes(sizes, a.shape[0], "size")
    return _ragged_read(dev.machine, a.shape[0], s, lambda i: dev.dma_read(int(a[i]), s[i]))


def dma_write_ragged_batch(dev, addrs, sizes, data) -> None:
    """Reference of dmaphys.dma_write_ragged_batch: ``dev.dma_write(addrs[i], <sizes[i] bytes>)``.

    Reference twin of dmaphys._core.dma_write_ragged_batch: same returns and raises.
    """
    _device_arg(dev)
    a = _batch_u64_array(addrs, "addrs")
    s = _batch_sizes(sizes, a.shape[0], "size")
    _ragged_write(dev.machine, a.shape[0], s, data, lambda i, b: dev.dma_write(int(a[i]), b))


def _machine_arg(machine):
    if not isinstance(machine, _machine.Machine):
        raise TypeError(f"machine must be a Machine, not {type(machine).__name__}")
    return machine


def mem_read_batch(machine, phys, sizes) -> np.ndarray:
    """Reference of dmaphys.mem_read_batch: ``machine.mem_read(phys[i], sizes[i])`` back to back.

    Reference twin of dmaphys._core.mem_read_batch: same returns and raises.
    """
    m = _machine_arg(machine)
    p = _batch_u64_array(phys, "phys")
    s = _batch_sizes(sizes, p.shape[0], "n")
    return _ragged_read(m, p.shape[0], s, lambda i: m.mem_read(int(p[i]), s[i]))


def mem_write_batch(machine, phys, sizes, data) -> None:
    """Reference of dmaphys.mem_write_batch: ``machine.mem_write(phys[i], <sizes[i] bytes>)``.

    Reference twin of dmaphys._core.mem_write_batch: same returns and raises.
    """
    m = _machine_arg(machine)
    p = _batch_u64_array(phys, "phys")
    s = _batch_sizes(sizes, p.shape[0], "n")
    _ragged_write(m, p.shape[0], s, data, lambda i, b: m.mem_write(int(p[i]), b))


def _sync_batch(dev, dma_addrs, sizes, dir, fn) -> None:
    dev = _mapping._dev(dev)
    a = _batch_u64_array(dma_addrs, "addr")
    s = _batch_sizes(sizes, a.shape[0], "size")
    d = _mapping._dir(dir)
    i = 0
    with _deferred_warnings(dev.machine):
        try:
            for i in range(a.shape[0]):
                fn(dev, int(a[i]), s[i], d)
        except BaseException as e:
            _batch_fail(e, i, None)
            raise


def dma_sync_single_for_cpu_batch(dev, dma_addrs, sizes, dir) -> None:
    """Reference of dmaphys.dma_sync_single_for_cpu_batch: dma_sync_single_for_cpu() per element.

    Reference twin of dmaphys._core.dma_sync_single_for_cpu_batch: same returns and raises.
    """
    _sync_batch(dev, dma_addrs, sizes, dir, _mapping.dma_sync_single_for_cpu)


def dma_sync_single_for_device_batch(dev, dma_addrs, sizes, dir) -> None:
    """Reference of dmaphys.dma_sync_single_for_device_batch: dma_sync_single_for_device() per element.

    Reference twin of dmaphys._core.dma_sync_single_for_device_batch: same returns and raises.
    """
    _sync_batch(dev, dma_addrs, sizes, dir, _mapping.dma_sync_single_for_device)


def dma_iova_link_batch(dev, state, phys, offsets, sizes, dir, attrs=0) -> np.ndarray:
    """Reference of dmaphys.dma_iova_link_batch: dma_iova_link() per element, 0 or -errno each.

    Reference twin of dmaphys._core.dma_iova_link_batch: same returns and raises.
    """
    _dma_iova._check_types(dev, state)
    p = _batch_u64_array(phys, "phys")
    n = p.shape[0]
    o = _batch_u64_array(offsets, "offset")
    if o.shape[0] != n:
        raise ValueError(f"offset has {o.shape[0]} entries for {n} addresses")
    s = _batch_sizes(sizes, n, "size")
    d = _dma_iova._int_dir(dir)
    a = _dma_iova._iova_attrs(attrs)
    _dma_iova._iova_check(dev, d, "dma_iova_link", True)
    out = np.empty(n, dtype=np.int32)
    i = 0
    with _deferred_warnings(dev.machine):
        try:
            for i in range(n):
                out[i] = _dma_iova.dma_iova_link(dev, state, int(p[i]), int(o[i]), s[i], d, a)
        except BaseException as e:
            _batch_fail(e, i, out[:i].copy())
            raise
    return out


# ---- the two-step IOVA API across a queue of requests ------------------------------------------
def _iova_states(states, what: str) -> list:
    if isinstance(states, (str, bytes)):
        raise TypeError(f"{what} must be a sequence of DmaIovaState, not {type(states).__name__}")
    try:
        out = list(states)
    except TypeError:
        raise TypeError(f"{what} must be a sequence of DmaIovaState, not {type(states).__name__}") from None
    for s in out:
        if type(s) is not _dma_iova.DmaIovaState:
            raise TypeError(f"{what} must hold DmaIovaState objects, not {type(s).__name__}")
    return out


def _iova_states_count(sts: list, n: int, what: str) -> None:
    if len(sts) != n:
        raise ValueError(f"{what} has {len(sts)} entries for {n} requests")


def dma_iova_alloc_link_sync_batch(dev, states, phys, sizes, counts, dir, attrs=0):
    """Reference of dmaphys.dma_iova_alloc_link_sync_batch: per request dma_iova_try_alloc(), a
    dma_iova_link() per segment up to the first failure, dma_iova_sync() when all linked.

    Reference twin of dmaphys._core.dma_iova_alloc_link_sync_batch: same returns and raises.
    """
    dev = _mapping._dev(dev)
    # each argument converted in the signature's order, then checked against the others
    sts = _iova_states(states, "states")
    p = _batch_u64_array(phys, "phys")
    n = p.shape[0]
    s = _batch_sizes(sizes, n, "size")
    c = _batch_u64_array(counts, "counts")
    nreq = c.shape[0]
    d = _dma_iova._int_dir(dir)
    a = _dma_iova._iova_attrs(attrs)
    _iova_states_count(sts, nreq, "states")
    nseg = sum(int(x) for x in c)
    if nseg != n:
        raise ValueError(f"counts total {nseg} segments for {n} phys entries")
    _ragged_total(s)
    if d not in (0, 1, 2):
        raise KernelBug(f"kernel BUG in dma_iova_link(): invalid DMA direction {d}")
    ret = np.zeros(nreq, dtype=np.int32)
    mapped = np.zeros(nreq, dtype=np.uint64)
    k0 = j = 0
    with _deferred_warnings(dev.machine):
        try:
            for j in range(nreq):
                st = sts[j]
                kend = k0 + int(c[j])
                total = sum(s[k0:kend])
                if not _dma_iova.dma_iova_try_alloc(dev, st, int(p[k0]) if kend > k0 else 0, total):
                    ret[j] = 1
                else:
                    off = e = 0
                    for k in range(k0, kend):
                        e = _dma_iova.dma_iova_link(dev, st, int(p[k]), off, s[k], d, a)
                        if e:
                            break
                        off += s[k]
                    mapped[j] = off
                    if e == 0:
                        e = _dma_iova.dma_iova_sync(dev, st, 0, off)
                    ret[j] = e
                k0 = kend
        except BaseException as exc:
            _batch_fail(exc, j, (ret[:j].copy(), mapped[:j].copy()))
            raise
    return ret, mapped


def dma_iova_destroy_batch(dev, states, mapped_lens, dir, attrs=0) -> None:
    """Reference of dmaphys.dma_iova_destroy_batch: dma_iova_destroy() per element.

    Reference twin of dmaphys._core.dma_iova_destroy_batch: same returns and raises.
    """
    dev = _mapping._dev(dev)
    sts = _iova_states(states, "states")
    ml = _batch_u64_array(mapped_lens, "mapped_lens")
    n = ml.shape[0]
    d = _dma_iova._int_dir(dir)
    a = _dma_iova._iova_attrs(attrs)
    _iova_states_count(sts, n, "states")
    _dma_iova._iova_check(dev, d, "dma_iova_destroy", True)
    i = 0
    with _deferred_warnings(dev.machine):
        try:
            for i in range(n):
                _dma_iova.dma_iova_destroy(dev, sts[i], int(ml[i]), d, a)
        except BaseException as e:
            _batch_fail(e, i, None)
            raise


# ==== ring batches that check bytes where they are (see batch.pxi) ================================
def _compare(got: np.ndarray, want: np.ndarray) -> tuple[int, int]:
    diff = np.flatnonzero(got != want)
    return int(diff.shape[0]), (int(diff[0]) if diff.shape[0] else -1)


def _ragged_compare(machine, n: int, s: list[int], expected, read_one) -> tuple[int, int]:
    """read_one(i) -> bytes for each element, compared with its part of ``expected``."""
    want = _ragged_data(expected, _ragged_total(s))
    off = i = ndiff = 0
    first = -1
    with _deferred_warnings(machine):
        try:
            for i in range(n):
                d, f = _compare(np.frombuffer(read_one(i), dtype=np.uint8), want[off:off + s[i]])
                if d and first < 0:
                    first = off + f
                ndiff += d
                off += s[i]
        except BaseException as e:
            _batch_fail(e, i, (ndiff, first))
            raise
    return ndiff, first


def dma_read_compare_ragged_batch(dev, addrs, sizes, expected) -> tuple[int, int]:
    """Reference of dmaphys.dma_read_compare_ragged_batch: ``dev.dma_read(addrs[i], sizes[i])``
    compared with ``expected`` (the elements back to back).

    Reference twin of dmaphys._core.dma_read_compare_ragged_batch: same returns and raises.
    """
    _device_arg(dev)
    a = _batch_u64_array(addrs, "addrs")
    s = _batch_sizes(sizes, a.shape[0], "size")
    return _ragged_compare(dev.machine, a.shape[0], s, expected, lambda i: dev.dma_read(int(a[i]), s[i]))


def mem_read_compare_batch(machine, phys, sizes, expected) -> tuple[int, int]:
    """Reference of dmaphys.mem_read_compare_batch: ``machine.mem_read(phys[i], sizes[i])``
    compared with ``expected`` (the elements back to back).

    Reference twin of dmaphys._core.mem_read_compare_batch: same returns and raises.
    """
    m = _machine_arg(machine)
    p = _batch_u64_array(phys, "phys")
    s = _batch_sizes(sizes, p.shape[0], "n")
    return _ragged_compare(m, p.shape[0], s, expected, lambda i: m.mem_read(int(p[i]), s[i]))

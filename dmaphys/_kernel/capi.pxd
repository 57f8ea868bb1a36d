# The C face of _kernel/capi.pxi: the C ABI for simulators written in C/C++. Its functions are
# reached through the dmaphys._core._C_API capsule (a dmaphys_api table, declared in
# dmaphys/include/dmaphys.h and, for Cython, dmaphys/capi.pxd), not by cimport.

cdef object _device_capsule(Device dev)        # dev.capsule: a "dmaphys.device" capsule

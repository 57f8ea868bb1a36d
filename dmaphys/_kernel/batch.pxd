# The C face of _kernel/batch.pxi: numpy batch entry points (def only) and the sizes helper type.


cdef struct BatchSizes:                        # (simulator) a batch's sizes: p[i * stride]
    const u64 *p                               # (simulator) the sizes array's data, or &one
    Py_ssize_t stride                          # (simulator) 1, or 0 for a scalar size
    u64 one                                    # (simulator) the scalar size

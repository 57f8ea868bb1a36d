# The C face of _kernel/batch.pxi: numpy batch entry points (def only: nothing to declare).



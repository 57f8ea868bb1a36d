# Include files of the compiled core (dmaphys/_core.pyx); not a Python package of its own.

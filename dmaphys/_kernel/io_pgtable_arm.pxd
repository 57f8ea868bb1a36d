# The C face of _kernel/io_pgtable_arm.pxi: io-pgtable-arm.c PTE bits (ARM_LPAE_PTE_*).

cdef extern from *:
    """
    #define DMAPHYS_ARM_ADDR_MASK  0x0000FFFFFFFFF000ULL   /* GENMASK_ULL(47, 12) */
    #define DMAPHYS_ARM_XN         (3ULL << 53)
    #define DMAPHYS_ARM_DBM        (1ULL << 51)
    #define DMAPHYS_ARM_SW_SYNC    (1ULL << 55)   /* ARM_LPAE_PTE_SW_SYNC: software bit */
    """
    const u64 ARM_ADDR_MASK "DMAPHYS_ARM_ADDR_MASK"
    const u64 ARM_XN "DMAPHYS_ARM_XN"
    const u64 ARM_DBM "DMAPHYS_ARM_DBM"        # ARM_LPAE_PTE_DBM (IO_PGTABLE_QUIRK_ARM_HD)
    const u64 ARM_SW_SYNC "DMAPHYS_ARM_SW_SYNC"

cdef enum:
    ARM_TYPE_MASK = 3
    ARM_TYPE_BLOCK = 1
    ARM_TYPE_TABLE = 3
    ARM_TYPE_PAGE = 3
    ARM_AP_UNPRIV = 1 << 6
    ARM_AP_RDONLY = 1 << 7
    ARM_ATTRINDX_SHIFT = 2
    ARM_ATTR_IDX_CACHE = 1
    ARM_ATTR_IDX_DEV = 2
    ARM_SH_OS = 2 << 8
    ARM_SH_IS = 3 << 8
    ARM_AF = 1 << 10
    ARM_NG = 1 << 11
    ARM_HAP_READ = 1 << 6                       # stage 2: ARM_LPAE_PTE_HAP_READ
    ARM_HAP_WRITE = 2 << 6                      # ARM_LPAE_PTE_HAP_WRITE
    ARM_MEMATTR_OIWB = 0xF << 2                 # ARM_LPAE_PTE_MEMATTR_OIWB
    ARM_MEMATTR_NC = 0x5 << 2                   # ARM_LPAE_PTE_MEMATTR_NC
    ARM_MEMATTR_DEV = 0x1 << 2                  # ARM_LPAE_PTE_MEMATTR_DEV
    ARM_LPAE_S2_MAX_CONCAT_PAGES = 16

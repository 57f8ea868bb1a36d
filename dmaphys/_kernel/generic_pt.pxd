# The C face of _kernel/generic_pt.pxi: generic_pt format bits (fmt/vtdss.h, fmt/x86_64.h,
# fmt/amdv1.h, fmt/riscv.h).

cdef extern from *:
    """
    #define DMAPHYS_PT_OA_MASK     0x000FFFFFFFFFF000ULL   /* GENMASK_ULL(51, 12) */
    #define DMAPHYS_X86_XD         (1ULL << 63)
    #define DMAPHYS_AMDV1_FC       (1ULL << 60)
    #define DMAPHYS_AMDV1_IR       (1ULL << 61)
    #define DMAPHYS_AMDV1_IW       (1ULL << 62)
    #define DMAPHYS_RISCV_PPN_MASK 0x003FFFFFFFFFFC00ULL   /* RISCVPT_PPN64 = GENMASK_ULL(53, 10) */
    #define DMAPHYS_RISCV_N        (1ULL << 63)
    """
    const u64 PT_OA_MASK "DMAPHYS_PT_OA_MASK"
    const u64 X86_XD "DMAPHYS_X86_XD"
    const u64 AMDV1_FC "DMAPHYS_AMDV1_FC"      # AMDV1PT_FMT_FC (force coherent)
    const u64 AMDV1_IR "DMAPHYS_AMDV1_IR"      # AMDV1PT_FMT_IR
    const u64 AMDV1_IW "DMAPHYS_AMDV1_IW"      # AMDV1PT_FMT_IW
    const u64 RISCV_PPN_MASK "DMAPHYS_RISCV_PPN_MASK"  # RISCVPT_PPN64
    const u64 RISCV_N "DMAPHYS_RISCV_N"        # RISCVPT_N (Svnapot)

cdef enum:
    VTDSS_R = 1 << 0                            # VTDSS_FMT_R
    VTDSS_W = 1 << 1                            # VTDSS_FMT_W
    VTDSS_PS = 1 << 7                           # VTDSS_FMT_PS
    VTDSS_D = 1 << 9                            # VTDSS_FMT_D (set by the IOMMU with SSADE)
    VTDSS_SNP = 1 << 11                         # VTDSS_FMT_SNP
    X86_P = 1 << 0                              # X86_64_FMT_P
    X86_RW = 1 << 1                             # X86_64_FMT_RW
    X86_U = 1 << 2                              # X86_64_FMT_U
    X86_A = 1 << 5                              # X86_64_FMT_A
    X86_D = 1 << 6                              # X86_64_FMT_D
    X86_PS = 1 << 7                             # X86_64_FMT_PS
    AMDV1_PR = 1 << 0                           # AMDV1PT_FMT_PR
    AMDV1_D = 1 << 6                            # AMDV1PT_FMT_D
    AMDV1_NL_SHIFT = 9                          # AMDV1PT_FMT_NEXT_LEVEL = GENMASK(11, 9)
    AMDV1_NL_SIZE = 7                           # AMDV1PT_FMT_NL_SIZE: a contiguous leaf
    AMDV1_MAX_TOP = 5                           # PT_MAX_TOP_LEVEL (6 levels, VA bits 63:57 at the top)
    RISCV_V = 1 << 0                            # RISCVPT_V
    RISCV_R = 1 << 1                            # RISCVPT_R
    RISCV_W = 1 << 2                            # RISCVPT_W
    RISCV_X = 1 << 3                            # RISCVPT_X
    RISCV_U = 1 << 4                            # RISCVPT_U
    RISCV_G = 1 << 5                            # RISCVPT_G
    RISCV_A = 1 << 6                            # RISCVPT_A
    RISCV_D = 1 << 7                            # RISCVPT_D
    RISCV_PPN_SHIFT = 10                        # the PPN field starts at bit 10 (4 KiB units)
    RISCV_NAPOT_64K = 1 << 13                   # RISCVPT_PPN64_64K_SZ: ppn[3:0] = 0b1000

// Helpers shared by the CPU kernels only.
#pragma once

// The hot loops are compiled for AVX-512 (x86-64-v4: F, BW, CD, DQ, VL), for AVX2
// and for the baseline ISA; the dynamic loader picks the best one for the machine
// (GCC function multiversioning). -ffp-contract=off and no reassociation keep every
// clone's results bit-identical.
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define DEFORMGAN_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#else
#define DEFORMGAN_CPU_CLONES
#endif

// A helper that inlines into its cloned caller and so is compiled for the caller's
// instruction set. (A cloned function itself is never inlined: calls to it go through
// the loader's choice of clone.)
#if defined(__GNUC__)
#define DEFORMGAN_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define DEFORMGAN_ALWAYS_INLINE inline
#endif

// Helpers shared by the CPU kernels only.
#pragma once

// The hot loops are compiled for AVX2 and for the baseline ISA; the dynamic
// loader picks the best one for the machine (GCC function multiversioning).
// DEFORMGAN_CPU_CLONES_AVX512 adds an AVX-512 clone (x86-64-v4: F, BW, CD, DQ, VL),
// for scalar code (the warp's location math) and for loops whose trip count is a
// multiple of 64 (the warp's channel loops when C is; dispatched by C): GCC vectorises
// a loop over floats and bytes (the warp's channel loops with their uint8 winners) 64
// elements at a time under AVX-512 and runs fewer than that scalar (C = 16: 3x slower
// than the AVX2 clone). -ffp-contract=off and no reassociation keep every clone's
// results bit-identical.
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define DEFORMGAN_CPU_CLONES __attribute__((target_clones("avx2", "default")))
#define DEFORMGAN_CPU_CLONES_AVX512 __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#else
#define DEFORMGAN_CPU_CLONES
#define DEFORMGAN_CPU_CLONES_AVX512
#endif

// A helper that inlines into its cloned caller and so is compiled for the caller's
// instruction set. (A cloned function itself is never inlined: calls to it go through
// the loader's choice of clone.)
#if defined(__GNUC__)
#define DEFORMGAN_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define DEFORMGAN_ALWAYS_INLINE inline
#endif

// Shared helpers for the per-element math of every DeformGAN kernel.
// Included by the CPU (.cpp) and CUDA (.cu) translation units alike, so the
// CPU tests exercise exactly the arithmetic the GPU runs.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define DEFORMGAN_HD __host__ __device__ __forceinline__
#define DEFORMGAN_UNROLL _Pragma("unroll")
#else
#define DEFORMGAN_HD inline
#define DEFORMGAN_UNROLL _Pragma("GCC unroll 4")
#endif

namespace deformgan_ops {

// True when v is neither NaN nor +-inf. Written with comparisons only so it is
// the same on host and device and survives -ffast-math style reassociation.
template <typename T>
DEFORMGAN_HD bool is_finite_value(T v) {
  return v == v && v - v == T(0);
}

// sign(v) in {-1, 0, 1}, and 0 for NaN (torch.sgn, autograd's derivative of
// abs), written so that compilers emit no branch (a branchy sign mispredicts
// half the time on random data, several times slower).
template <typename T>
DEFORMGAN_HD T sign_of(T v) {
  return ::copysign(T(1), v) * static_cast<T>((v > T(0)) | (v < T(0)));
}

}  // namespace deformgan_ops

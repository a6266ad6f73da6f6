// Helpers shared by the CUDA kernels only: launch geometry, accumulation type.
#pragma once

#include <ATen/Context.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <cstdint>

namespace deformgan_ops {

constexpr int kThreads = 256;

// Blocks for a grid-stride loop over `total` items (capped; the loop covers the rest).
inline unsigned int blocks_for(int64_t total) {
  const int64_t b = (total + kThreads - 1) / kThreads;
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min<int64_t>(b, 65535LL * 8)));
}

#define DEFORMGAN_GRID_STRIDE_LOOP(i, total)                                         \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (total); \
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)

// Sum of kValues per-thread values over one block (blockDim.x == kThreads); the
// result is valid in thread 0.
template <typename acc_t, int kValues>
__device__ void block_sum(acc_t (&v)[kValues]) {
  __shared__ acc_t shared[kValues][kThreads];
  for (int j = 0; j < kValues; ++j) shared[j][threadIdx.x] = v[j];
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) {
      for (int j = 0; j < kValues; ++j) shared[j][threadIdx.x] += shared[j][threadIdx.x + stride];
    }
    __syncthreads();
  }
  for (int j = 0; j < kValues; ++j) v[j] = shared[j][0];
}

}  // namespace deformgan_ops

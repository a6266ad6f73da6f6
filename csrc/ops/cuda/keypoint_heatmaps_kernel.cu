// CUDA kernels of keypoint_heatmaps: forward and backward. The per-element math
// is in ../keypoint_heatmaps_math.h, shared with (and tested through) the CPU kernels.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include "../checks.h"
#include "../keypoint_heatmaps_math.h"
#include "cuda_utils.cuh"

namespace deformgan_ops {
namespace {

// Threads along x (blockDim.x, a power of two up to the row's width) and output rows
// (n, k, y) along blockDim.y, grid-striding over the rows: a row's joint and the y
// factor of the separable Gaussian are computed once per row and thread, not once per
// element, and no element index is divided (the 64-bit divisions and the second exp
// were most of the per-element instructions of the one-thread-per-element kernel).
// The product gy * gx is the same as before, so the maps are unchanged.
template <typename scalar_t, typename acc_t>
__global__ void keypoint_heatmaps_forward_kernel(const scalar_t* __restrict__ kp,
                                                 scalar_t* __restrict__ out, int64_t NK,
                                                 int64_t height, int64_t width, acc_t inv) {
  const int64_t rows = NK * height;
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y; row < rows;
       row += static_cast<int64_t>(gridDim.x) * blockDim.y) {
    const int64_t j = row / height, y = row - j * height;
    const acc_t kx = static_cast<acc_t>(kp[j * 2]), ky = static_cast<acc_t>(kp[j * 2 + 1]);
    const bool missing = keypoint_missing(kx, ky);
    const acc_t gy = missing ? acc_t(0) : gaussian_1d(static_cast<acc_t>(y) - ky, inv);
    scalar_t* o = out + row * width;
    for (int64_t x = threadIdx.x; x < width; x += blockDim.x) {
      acc_t h = acc_t(0);
      if (!missing) h = gy * gaussian_1d(static_cast<acc_t>(x) - kx, inv);
      o[x] = static_cast<scalar_t>(h);
    }
  }
}

// One block per joint (n, k): a block reduction of the two coordinate gradients.
template <typename scalar_t, typename acc_t>
__global__ void keypoint_heatmaps_backward_kernel(const scalar_t* __restrict__ grad_out,
                                                  const scalar_t* __restrict__ kp,
                                                  scalar_t* __restrict__ grad_kp, int64_t height,
                                                  int64_t width, acc_t inv) {
  const int64_t j = blockIdx.x;
  const acc_t kx = static_cast<acc_t>(kp[j * 2]), ky = static_cast<acc_t>(kp[j * 2 + 1]);
  const bool missing = keypoint_missing(kx, ky);
  acc_t s[2] = {0, 0};
  if (!missing) {
    const scalar_t* g = grad_out + j * height * width;
    for (int64_t pix = threadIdx.x; pix < height * width; pix += blockDim.x) {
      const acc_t dx = static_cast<acc_t>(pix % width) - kx;
      const acc_t dy = static_cast<acc_t>(pix / width) - ky;
      const acc_t gx = gaussian_1d(dx, inv), gy = gaussian_1d(dy, inv);
      const acc_t gv = static_cast<acc_t>(g[pix]);
      s[0] += gv * gy * gaussian_1d_slope(dx, gx, inv);
      s[1] += gv * gx * gaussian_1d_slope(dy, gy, inv);
    }
  }
  block_sum<acc_t, 2>(s);
  if (threadIdx.x == 0) {
    grad_kp[j * 2] = static_cast<scalar_t>(missing ? acc_t(0) : s[0]);
    grad_kp[j * 2 + 1] = static_cast<scalar_t>(missing ? acc_t(0) : s[1]);
  }
}

void keypoint_heatmaps_cuda_impl(const at::Tensor& keypoints_in, double sigma, at::Tensor& output) {
  TORCH_CHECK(keypoints_in.is_cuda(), "keypoints must be a CUDA tensor for the cuda kernel");
  if (output.numel() == 0) return;
  c10::cuda::CUDAGuard guard(keypoints_in.device());
  const at::Tensor keypoints = keypoints_in.contiguous();
  const int64_t NK = keypoints.size(0) * keypoints.size(1);
  const int64_t height = output.size(2), width = output.size(3);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, keypoints.scalar_type(),
                                  "keypoint_heatmaps_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t inv = acc_t(1) / (acc_t(2) * static_cast<acc_t>(sigma) * static_cast<acc_t>(sigma));
    unsigned int tx = 1;
    while (tx < kThreads && static_cast<int64_t>(tx) < width) tx <<= 1;
    const dim3 block(tx, kThreads / tx);
    const int64_t rows = NK * height;
    const int64_t grid = std::max<int64_t>(1, std::min<int64_t>((rows + block.y - 1) / block.y, 65535LL * 8));
    keypoint_heatmaps_forward_kernel<scalar_t, acc_t>
        <<<static_cast<unsigned int>(grid), block, 0, stream>>>(
            keypoints.data_ptr<scalar_t>(), output.data_ptr<scalar_t>(), NK, height, width, inv);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

at::Tensor keypoint_heatmaps_backward_cuda(const at::Tensor& grad_output_in,
                                           const at::Tensor& keypoints_in, int64_t height,
                                           int64_t width, double sigma) {
  check_keypoint_heatmaps_backward_inputs(grad_output_in, keypoints_in, height, width, sigma);
  c10::cuda::CUDAGuard guard(keypoints_in.device());
  const int64_t N = keypoints_in.size(0), K = keypoints_in.size(1);
  const at::Tensor keypoints = keypoints_in.contiguous();
  const at::Tensor grad_output = grad_output_in.to(keypoints.scalar_type()).contiguous();
  at::Tensor grad_keypoints = at::zeros(keypoints.sizes(), keypoints.options());
  if (N * K == 0) return grad_keypoints;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, keypoints.scalar_type(),
                                  "keypoint_heatmaps_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t inv = acc_t(1) / (acc_t(2) * static_cast<acc_t>(sigma) * static_cast<acc_t>(sigma));
    keypoint_heatmaps_backward_kernel<scalar_t, acc_t>
        <<<static_cast<unsigned int>(N * K), kThreads, 0, stream>>>(
            grad_output.data_ptr<scalar_t>(), keypoints.data_ptr<scalar_t>(),
            grad_keypoints.data_ptr<scalar_t>(), height, width, inv);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad_keypoints;
}

}  // namespace

TORCH_LIBRARY_IMPL(deformgan_ops, CUDA, m) {
  m.impl("keypoint_heatmaps", &keypoint_heatmaps_entry<keypoint_heatmaps_cuda_impl>);
  m.impl("keypoint_heatmaps.out", &keypoint_heatmaps_out_entry<keypoint_heatmaps_cuda_impl>);
  m.impl("_keypoint_heatmaps_backward", &keypoint_heatmaps_backward_cuda);
}

}  // namespace deformgan_ops

// CUDA kernels of the pose geometry: part_masks (and its out= form) and
// part_affines. The per-pose math is in ../pose_geometry_math.h, shared with (and
// tested through) the CPU kernels.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "../checks.h"
#include "../pose_geometry_math.h"
#include "cuda_utils.cuh"

namespace deformgan_ops {
namespace {

using pose::kNumJoints;
using pose::kNumParts;

// One thread per output element (n, part, y, x), x fastest: coalesced stores. Each
// thread rebuilds its part's shape and row bounds (a few dozen flops, cheaper than
// the strided stores of a thread per row).
template <typename scalar_t>
__global__ void part_masks_kernel(const scalar_t* __restrict__ kp, const bool* __restrict__ on,
                                  scalar_t* __restrict__ out, int64_t total, int64_t height,
                                  int64_t width, scalar_t scale) {
  DEFORMGAN_GRID_STRIDE_LOOP(i, total) {
    const int64_t x = i % width;
    const int64_t y = (i / width) % height;
    const int64_t j = i / (width * height);  // n * kNumParts + part
    const int64_t n = j / kNumParts;
    const int part = static_cast<int>(j % kNumParts);
    const bool part_on = on == nullptr || on[j];
    const auto shape = pose::make_mask_shape<scalar_t>(kp + n * kNumJoints * 2, part, scale, part_on);
    bool inside = shape.kind == 1;
    if (shape.kind > 1) inside = pose::mask_inside(shape, pose::mask_row(shape, y), x);
    out[i] = inside ? scalar_t(1) : scalar_t(0);
  }
}

// One thread per (part, pose pair), pairs fastest: the 32 threads of a warp fit one
// part for 32 pairs and so take one branch of part_affine_of_pair (torso, head or
// limb), where with parts fastest each warp ran all three fits one after the other.
template <typename scalar_t>
__global__ void part_affines_kernel(const scalar_t* __restrict__ src, const scalar_t* __restrict__ tgt,
                                    scalar_t* __restrict__ theta, bool* __restrict__ valid, int64_t N) {
  DEFORMGAN_GRID_STRIDE_LOOP(i, N * kNumParts) {
    const int part = static_cast<int>(i / N);
    const int64_t n = i % N;
    const int64_t o = n * kNumParts + part;
    double fit[6];
    valid[o] = pose::part_affine_of_pair(src + n * kNumJoints * 2, tgt + n * kNumJoints * 2, part, fit);
    for (int k = 0; k < 6; ++k) theta[o * 6 + k] = static_cast<scalar_t>(fit[k]);
  }
}

void part_masks_cuda_impl(const at::Tensor& keypoints_in, double scale,
                          const c10::optional<at::Tensor>& enabled_in, at::Tensor& output) {
  TORCH_CHECK(keypoints_in.is_cuda(), "keypoints must be a CUDA tensor for the cuda kernel");
  if (output.numel() == 0) return;
  c10::cuda::CUDAGuard guard(keypoints_in.device());
  const at::Tensor keypoints = keypoints_in.contiguous();
  const bool has_enabled = enabled_in.has_value() && enabled_in->defined();
  const at::Tensor enabled = has_enabled ? enabled_in->contiguous() : at::Tensor();
  const int64_t total = output.numel();
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(keypoints.scalar_type(), "part_masks_cuda", [&] {
    part_masks_kernel<scalar_t><<<blocks_for(total), kThreads, 0, stream>>>(
        keypoints.data_ptr<scalar_t>(), has_enabled ? enabled.data_ptr<bool>() : nullptr,
        output.data_ptr<scalar_t>(), total, output.size(2), output.size(3), static_cast<scalar_t>(scale));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

std::tuple<at::Tensor, at::Tensor> part_affines_cuda(const at::Tensor& source_in,
                                                     const at::Tensor& target_in) {
  check_part_affines_inputs(source_in, target_in);
  TORCH_CHECK(source_in.is_cuda(), "source_keypoints must be a CUDA tensor for the cuda kernel");
  c10::cuda::CUDAGuard guard(source_in.device());
  const at::Tensor source = source_in.contiguous(), target = target_in.contiguous();
  const int64_t N = source.size(0);
  at::Tensor theta = at::empty({N, kNumParts, 2, 3}, source.options());
  at::Tensor valid = at::empty({N, kNumParts}, source.options().dtype(at::kBool));
  if (N == 0) return {theta, valid};
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(source.scalar_type(), "part_affines_cuda", [&] {
    part_affines_kernel<scalar_t><<<blocks_for(N * kNumParts), kThreads, 0, stream>>>(
        source.data_ptr<scalar_t>(), target.data_ptr<scalar_t>(), theta.data_ptr<scalar_t>(),
        valid.data_ptr<bool>(), N);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {theta, valid};
}

}  // namespace

TORCH_LIBRARY_IMPL(deformgan_ops, CUDA, m) {
  m.impl("part_masks", &part_masks_entry<part_masks_cuda_impl>);
  m.impl("part_masks.out", &part_masks_out_entry<part_masks_cuda_impl>);
  m.impl("part_affines", &part_affines_cuda);
}

}  // namespace deformgan_ops

// CPU kernels of keypoint_heatmaps: forward and backward.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/AccumulateType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <vector>

#include "../checks.h"
#include "cpu_utils.h"
#include "../keypoint_heatmaps_math.h"

namespace deformgan_ops {
namespace {

// out[y, x] = gy[y] * gx[x]
template <typename scalar_t, typename acc_t>
DEFORMGAN_CPU_CLONES void outer_product(scalar_t* __restrict__ out, const acc_t* __restrict__ gy,
                                        const acc_t* __restrict__ gx, int64_t height, int64_t width) {
  for (int64_t y = 0; y < height; ++y) {
    const acc_t wy = gy[y];
    scalar_t* __restrict__ row = out + y * width;
    for (int64_t x = 0; x < width; ++x) row[x] = static_cast<scalar_t>(wy * gx[x]);
  }
}

// cy[x] = sum_y g[y, x] gy[y] and csy[x] = sum_y g[y, x] sy[y].
template <typename scalar_t, typename acc_t>
DEFORMGAN_CPU_CLONES void weighted_column_sums(const scalar_t* __restrict__ g,
                                               const acc_t* __restrict__ gy,
                                               const acc_t* __restrict__ sy, acc_t* __restrict__ cy,
                                               acc_t* __restrict__ csy, int64_t height, int64_t width) {
  for (int64_t x = 0; x < width; ++x) cy[x] = csy[x] = acc_t(0);
  for (int64_t y = 0; y < height; ++y) {
    const acc_t a = gy[y], b = sy[y];
    const scalar_t* __restrict__ row = g + y * width;
    for (int64_t x = 0; x < width; ++x) {
      cy[x] += static_cast<acc_t>(row[x]) * a;
      csy[x] += static_cast<acc_t>(row[x]) * b;
    }
  }
}

// Fills output [N, K, height, width] (contiguous, checked by the callers).
void keypoint_heatmaps_cpu_impl(const at::Tensor& keypoints_in, double sigma, at::Tensor& output) {
  TORCH_CHECK(keypoints_in.device().is_cpu(), "keypoints must be a CPU tensor for the cpu kernel");
  if (output.numel() == 0) return;
  const at::Tensor keypoints = keypoints_in.contiguous();
  const int64_t N = keypoints.size(0), K = keypoints.size(1);
  const int64_t height = output.size(2), width = output.size(3);
  // float16/bfloat16 keypoints are read as they are; the Gaussians are computed in
  // float32 (at::opmath_type) and rounded once when written.
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, keypoints.scalar_type(), "keypoint_heatmaps_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* kp = keypoints.data_ptr<scalar_t>();
    scalar_t* out = output.data_ptr<scalar_t>();
    const acc_t inv = acc_t(1) / (acc_t(2) * static_cast<acc_t>(sigma) * static_cast<acc_t>(sigma));
    at::parallel_for(0, N * K, 1, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> gx(width), gy(height);
      for (int64_t j = begin; j < end; ++j) {
        const acc_t kx = kp[j * 2], ky = kp[j * 2 + 1];
        scalar_t* o = out + j * height * width;
        if (keypoint_missing(kx, ky)) {
          std::fill(o, o + height * width, scalar_t(0));
          continue;
        }
        for (int64_t x = 0; x < width; ++x) gx[x] = gaussian_1d(static_cast<acc_t>(x) - kx, inv);
        for (int64_t y = 0; y < height; ++y) gy[y] = gaussian_1d(static_cast<acc_t>(y) - ky, inv);
        outer_product<scalar_t, acc_t>(o, gy.data(), gx.data(), height, width);
      }
    });
  });
}

at::Tensor keypoint_heatmaps_backward_cpu(const at::Tensor& grad_output_in,
                                          const at::Tensor& keypoints_in, int64_t height,
                                          int64_t width, double sigma) {
  check_keypoint_heatmaps_backward_inputs(grad_output_in, keypoints_in, height, width, sigma);
  const int64_t N = keypoints_in.size(0), K = keypoints_in.size(1);
  const at::Tensor keypoints = keypoints_in.contiguous();
  const at::Tensor grad_output = grad_output_in.to(keypoints.scalar_type()).contiguous();
  at::Tensor grad_keypoints = at::zeros(keypoints.sizes(), keypoints.options());
  if (grad_output.numel() == 0) return grad_keypoints;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, keypoints.scalar_type(),
                                  "keypoint_heatmaps_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    using sum_t = at::acc_type<acc_t, false>;
    const scalar_t* kp = keypoints.data_ptr<scalar_t>();
    const scalar_t* go = grad_output.data_ptr<scalar_t>();
    scalar_t* gk = grad_keypoints.data_ptr<scalar_t>();
    const acc_t inv = acc_t(1) / (acc_t(2) * static_cast<acc_t>(sigma) * static_cast<acc_t>(sigma));
    // Each task owns the gradient of its (n, k) joints.
    at::parallel_for(0, N * K, 1, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> gx(width), gy(height);
      std::vector<acc_t> col_y(width), col_sy(width), sy(height);
      for (int64_t j = begin; j < end; ++j) {
        const acc_t kx = kp[j * 2], ky = kp[j * 2 + 1];
        if (keypoint_missing(kx, ky)) continue;
        for (int64_t x = 0; x < width; ++x) gx[x] = gaussian_1d(static_cast<acc_t>(x) - kx, inv);
        for (int64_t y = 0; y < height; ++y) gy[y] = gaussian_1d(static_cast<acc_t>(y) - ky, inv);
        // h = gy[y] gx[x]: d h / d kx = gy[y] sx[x], d h / d ky = sy[y] gx[x], so
        // sum g dh/dkx = sum_x sx[x] (sum_y g[y, x] gy[y]) and likewise for ky;
        // the two column sums are accumulated elementwise (vectorisable).
        for (int64_t y = 0; y < height; ++y) {
          sy[y] = gaussian_1d_slope(static_cast<acc_t>(y) - ky, gy[y], inv);
        }
        weighted_column_sums<scalar_t, acc_t>(go + j * height * width, gy.data(), sy.data(),
                                              col_y.data(), col_sy.data(), height, width);
        sum_t sum_kx = 0, sum_ky = 0;
        for (int64_t x = 0; x < width; ++x) {
          sum_kx += static_cast<sum_t>(col_y[x]) *
                    gaussian_1d_slope(static_cast<acc_t>(x) - kx, gx[x], inv);
          sum_ky += static_cast<sum_t>(col_sy[x]) * gx[x];
        }
        gk[j * 2] = static_cast<scalar_t>(static_cast<acc_t>(sum_kx));
        gk[j * 2 + 1] = static_cast<scalar_t>(static_cast<acc_t>(sum_ky));
      }
    });
  });
  return grad_keypoints;
}

}  // namespace

TORCH_LIBRARY_IMPL(deformgan_ops, CPU, m) {
  m.impl("keypoint_heatmaps", &keypoint_heatmaps_entry<keypoint_heatmaps_cpu_impl>);
  m.impl("keypoint_heatmaps.out", &keypoint_heatmaps_out_entry<keypoint_heatmaps_cpu_impl>);
  m.impl("_keypoint_heatmaps_backward", &keypoint_heatmaps_backward_cpu);
}

}  // namespace deformgan_ops

// CUDA kernels of part_affine_warp: forward and backward. The per-element math
// is in ../part_affine_warp_math.h, shared with (and tested through) the CPU kernels.
#include <ATen/Dispatch.h>
#include <ATen/cuda/Atomic.cuh>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <array>
#include <limits>

#include "../checks.h"
#include "../part_affine_warp_math.h"
#include "cuda_utils.cuh"

namespace deformgan_ops {
namespace {

// One thread per output element (n, c, y, x); parts in increasing p.
template <typename scalar_t, typename acc_t>
__global__ void part_affine_warp_forward_kernel(
    const scalar_t* __restrict__ feat, const scalar_t* __restrict__ theta,
    const scalar_t* __restrict__ masks, const scalar_t* __restrict__ offsets,
    scalar_t* __restrict__ out, uint8_t* __restrict__ winner, int64_t N, int64_t C, int64_t H,
    int64_t W, int64_t P, int64_t Ho, int64_t Wo) {
  const int64_t total = N * C * Ho * Wo;
  DEFORMGAN_GRID_STRIDE_LOOP(i, total) {
    const int64_t x = i % Wo;
    const int64_t y = (i / Wo) % Ho;
    const int64_t c = (i / (Wo * Ho)) % C;
    const int64_t n = i / (Wo * Ho * C);
    const scalar_t* plane = feat + (n * C + c) * H * W;
    acc_t du = 0, dv = 0;
    if (offsets != nullptr) {
      du = static_cast<acc_t>(offsets[(n * 2 + 0) * Ho * Wo + y * Wo + x]);
      dv = static_cast<acc_t>(offsets[(n * 2 + 1) * Ho * Wo + y * Wo + x]);
    }
    acc_t best = -std::numeric_limits<acc_t>::infinity();
    int best_p = 0;
    for (int64_t p = 0; p < P; ++p) {
      const acc_t m = static_cast<acc_t>(masks[((n * P + p) * Ho + y) * Wo + x]);
      acc_t cand = acc_t(0);
      if (m != acc_t(0)) {  // a zero-mask part contributes exactly 0, unsampled
        acc_t th[6];
        for (int k = 0; k < 6; ++k) th[k] = static_cast<acc_t>(theta[(n * P + p) * 6 + k]);
        acc_t u, v;
        affine_location(th, static_cast<acc_t>(x), static_cast<acc_t>(y), du, dv, u, v);
        cand = part_candidate(plane, bilinear_corners(u, v, H, W), m);
      }
      if (candidate_wins(cand, best)) {
        best = cand;
        best_p = static_cast<int>(p);
      }
    }
    out[i] = static_cast<scalar_t>(best);
    winner[i] = static_cast<uint8_t>(best_p);
  }
}

// One thread per output pixel (n, y, x), looping over the channels: it owns
// grad_masks[n, :, y, x], the location gradients gloc[n, :, :, y, x] and
// grad_offsets[n, :, y, x], so only the feature gradient needs atomics.
template <typename scalar_t, typename acc_t>
__global__ void part_affine_warp_backward_kernel(
    const scalar_t* __restrict__ grad_out, const scalar_t* __restrict__ feat,
    const scalar_t* __restrict__ theta, const scalar_t* __restrict__ masks,
    const scalar_t* __restrict__ offsets, const uint8_t* __restrict__ winner,
    acc_t* __restrict__ gfeat, acc_t* __restrict__ gmask, acc_t* __restrict__ gloc,
    acc_t* __restrict__ goff, int64_t N, int64_t C, int64_t H, int64_t W, int64_t P, int64_t Ho,
    int64_t Wo) {
  const int64_t total = N * Ho * Wo;
  const int64_t HWo = Ho * Wo;
  DEFORMGAN_GRID_STRIDE_LOOP(i, total) {
    const int64_t x = i % Wo;
    const int64_t y = (i / Wo) % Ho;
    const int64_t n = i / HWo;
    const int64_t pix = y * Wo + x;
    acc_t du = 0, dv = 0;
    if (offsets != nullptr) {
      du = static_cast<acc_t>(offsets[(n * 2 + 0) * HWo + pix]);
      dv = static_cast<acc_t>(offsets[(n * 2 + 1) * HWo + pix]);
    }
    acc_t off_u = 0, off_v = 0;
    for (int64_t c = 0; c < C; ++c) {
      const int64_t o = (n * C + c) * HWo + pix;
      const acc_t g = static_cast<acc_t>(grad_out[o]);
      if (g == acc_t(0)) continue;
      const int64_t p = winner[o];
      acc_t th[6];
      for (int k = 0; k < 6; ++k) th[k] = static_cast<acc_t>(theta[(n * P + p) * 6 + k]);
      acc_t u, v;
      affine_location(th, static_cast<acc_t>(x), static_cast<acc_t>(y), du, dv, u, v);
      const BilinearCorners<acc_t> cr = bilinear_corners(u, v, H, W);
      if (!cr.any) continue;  // the sample and all its derivatives are 0
      const scalar_t* plane = feat + (n * C + c) * H * W;
      acc_t f[4], w[4];
      corner_values(plane, cr, f);
      bilinear_weights(cr, w);
      const acc_t m = static_cast<acc_t>(masks[(n * P + p) * HWo + pix]);
      if (gmask != nullptr) {
        gmask[(n * P + p) * HWo + pix] +=
            g * mask_grad_sample(m, w[0] * f[0] + w[1] * f[1] + w[2] * f[2] + w[3] * f[3]);
      }
      if (m == acc_t(0)) continue;  // the candidate of a zero-mask part ignores the sample
      const acc_t gm = g * m;
      if (gfeat != nullptr) {
        acc_t* gplane = gfeat + (n * C + c) * H * W;
        for (int k = 0; k < 4; ++k) {
          if (cr.idx[k] >= 0) gpuAtomicAdd(gplane + cr.idx[k], gm * w[k]);
        }
      }
      if (gloc != nullptr || goff != nullptr) {
        acc_t ds_du, ds_dv;
        bilinear_grad_location(cr, f, ds_du, ds_dv);
        if (gloc != nullptr) {
          gloc[((n * P + p) * 2 + 0) * HWo + pix] += gm * ds_du;
          gloc[((n * P + p) * 2 + 1) * HWo + pix] += gm * ds_dv;
        }
        off_u += gm * ds_du;
        off_v += gm * ds_dv;
      }
    }
    if (goff != nullptr) {
      goff[(n * 2 + 0) * HWo + pix] = off_u;
      goff[(n * 2 + 1) * HWo + pix] = off_v;
    }
  }
}

// grad_theta[n, p] = sum over pixels of (gu, gv) (x) (x, y, 1): one block per
// (n, p), a shared-memory reduction, no global atomics.
template <typename scalar_t, typename acc_t>
__global__ void part_affine_warp_theta_kernel(const acc_t* __restrict__ gloc,
                                              scalar_t* __restrict__ grad_theta, int64_t Ho,
                                              int64_t Wo) {
  const int64_t np = blockIdx.x;
  const acc_t* gu = gloc + (np * 2 + 0) * Ho * Wo;
  const acc_t* gv = gloc + (np * 2 + 1) * Ho * Wo;
  acc_t s[6] = {0, 0, 0, 0, 0, 0};
  for (int64_t pix = threadIdx.x; pix < Ho * Wo; pix += blockDim.x) {
    const acc_t x = static_cast<acc_t>(pix % Wo), y = static_cast<acc_t>(pix / Wo);
    s[0] += gu[pix] * x;
    s[1] += gu[pix] * y;
    s[2] += gu[pix];
    s[3] += gv[pix] * x;
    s[4] += gv[pix] * y;
    s[5] += gv[pix];
  }
  block_sum<acc_t, 6>(s);
  if (threadIdx.x == 0) {
    for (int k = 0; k < 6; ++k) grad_theta[np * 6 + k] = static_cast<scalar_t>(s[k]);
  }
}

std::tuple<at::Tensor, at::Tensor> part_affine_warp_cuda(const at::Tensor& features_in,
                                                         const at::Tensor& theta_in,
                                                         const at::Tensor& masks_in,
                                                         const c10::optional<at::Tensor>& offsets_in) {
  check_part_affine_warp_inputs(features_in, theta_in, masks_in, offsets_in);
  TORCH_CHECK(features_in.is_cuda(), "features must be a CUDA tensor for the cuda kernel");
  c10::cuda::CUDAGuard guard(features_in.device());
  const at::Tensor features = features_in.contiguous();
  const at::Tensor theta = theta_in.contiguous();
  const at::Tensor masks = masks_in.contiguous();
  const bool has_offsets = offsets_in.has_value() && offsets_in->defined();
  const at::Tensor offsets = has_offsets ? offsets_in->contiguous() : at::Tensor();
  const int64_t N = features.size(0), C = features.size(1), H = features.size(2), W = features.size(3);
  const int64_t P = theta.size(1), Ho = masks.size(2), Wo = masks.size(3);
  at::Tensor output = at::empty({N, C, Ho, Wo}, features.options());
  at::Tensor winner = at::empty({N, C, Ho, Wo}, features.options().dtype(at::kByte));
  const int64_t total = output.numel();
  if (total == 0) return {output, winner};
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, features.scalar_type(),
                                  "part_affine_warp_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    part_affine_warp_forward_kernel<scalar_t, acc_t><<<blocks_for(total), kThreads, 0, stream>>>(
        features.data_ptr<scalar_t>(), theta.data_ptr<scalar_t>(), masks.data_ptr<scalar_t>(),
        has_offsets ? offsets.data_ptr<scalar_t>() : nullptr, output.data_ptr<scalar_t>(),
        winner.data_ptr<uint8_t>(), N, C, H, W, P, Ho, Wo);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {output, winner};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> part_affine_warp_backward_cuda(
    const at::Tensor& grad_output_in, const at::Tensor& features_in, const at::Tensor& theta_in,
    const at::Tensor& masks_in, const c10::optional<at::Tensor>& offsets_in,
    const at::Tensor& winner_in, std::array<bool, 4> output_mask) {
  check_part_affine_warp_backward_inputs(grad_output_in, features_in, theta_in, masks_in, offsets_in, winner_in);
  c10::cuda::CUDAGuard guard(features_in.device());
  const int64_t N = features_in.size(0), C = features_in.size(1), H = features_in.size(2),
                W = features_in.size(3);
  const int64_t P = theta_in.size(1), Ho = masks_in.size(2), Wo = masks_in.size(3);
  const bool has_offsets = offsets_in.has_value() && offsets_in->defined();
  const bool need_features = output_mask[0], need_theta = output_mask[1],
             need_masks = output_mask[2], need_offsets = output_mask[3] && has_offsets;
  if (need_features) {
    // The feature gradient is scattered with atomics: its summation order varies.
    at::globalContext().alertNotDeterministic("deformgan_ops::_part_affine_warp_backward (CUDA)");
  }
  const at::Tensor grad_output = grad_output_in.to(features_in.scalar_type()).contiguous();
  const at::Tensor features = features_in.contiguous();
  const at::Tensor theta = theta_in.contiguous();
  const at::Tensor masks = masks_in.contiguous();
  const at::Tensor winner = winner_in.contiguous();
  const at::Tensor offsets = has_offsets ? offsets_in->contiguous() : at::Tensor();
  const auto acc_dtype = at::toOpMathType(features.scalar_type());
  const auto acc_opts = features.options().dtype(acc_dtype);
  const auto none = [&] { return at::empty({0}, features.options()); };
  // Accumulation buffers in the accumulation type (float for half/bfloat16).
  at::Tensor gfeat = need_features ? at::zeros({N, C, H, W}, acc_opts) : at::Tensor();
  at::Tensor gmask = need_masks ? at::zeros({N, P, Ho, Wo}, acc_opts) : at::Tensor();
  at::Tensor gloc = need_theta ? at::zeros({N, P, 2, Ho, Wo}, acc_opts) : at::Tensor();
  at::Tensor goff = need_offsets ? at::zeros({N, 2, Ho, Wo}, acc_opts) : at::Tensor();
  at::Tensor grad_theta = need_theta ? at::empty_like(theta) : none();
  if (N > 0 && Ho * Wo > 0 && (need_features || need_masks || need_theta || need_offsets)) {
    auto stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, features.scalar_type(),
                                    "part_affine_warp_backward_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const int64_t total = N * Ho * Wo;
      part_affine_warp_backward_kernel<scalar_t, acc_t><<<blocks_for(total), kThreads, 0, stream>>>(
          grad_output.data_ptr<scalar_t>(), features.data_ptr<scalar_t>(),
          theta.data_ptr<scalar_t>(), masks.data_ptr<scalar_t>(),
          has_offsets ? offsets.data_ptr<scalar_t>() : nullptr, winner.data_ptr<uint8_t>(),
          need_features ? gfeat.data_ptr<acc_t>() : nullptr,
          need_masks ? gmask.data_ptr<acc_t>() : nullptr,
          need_theta ? gloc.data_ptr<acc_t>() : nullptr,
          need_offsets ? goff.data_ptr<acc_t>() : nullptr, N, C, H, W, P, Ho, Wo);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      if (need_theta) {
        part_affine_warp_theta_kernel<scalar_t, acc_t>
            <<<static_cast<unsigned int>(N * P), kThreads, 0, stream>>>(
                gloc.data_ptr<acc_t>(), grad_theta.data_ptr<scalar_t>(), Ho, Wo);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
    });
  } else if (need_theta) {
    grad_theta.zero_();
  }
  const auto dtype = features.scalar_type();
  return {need_features ? gfeat.to(dtype) : none(), grad_theta,
          need_masks ? gmask.to(dtype) : none(), need_offsets ? goff.to(dtype) : none()};
}

}  // namespace

TORCH_LIBRARY_IMPL(deformgan_ops, CUDA, m) {
  m.impl("part_affine_warp", &part_affine_warp_cuda);
  m.impl("_part_affine_warp_backward", &part_affine_warp_backward_cuda);
}

}  // namespace deformgan_ops

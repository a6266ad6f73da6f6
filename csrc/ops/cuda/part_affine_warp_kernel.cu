// CUDA kernels of part_affine_warp: forward and backward. The per-element math
// is in ../part_affine_warp_math.h, shared with (and tested through) the CPU kernels.
#include <ATen/Dispatch.h>
#include <ATen/cuda/Atomic.cuh>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <array>
#include <limits>

#include "../checks.h"
#include "../part_affine_warp_math.h"
#include "cuda_utils.cuh"

namespace deformgan_ops {
namespace {

// Channels handled by one thread: the taps of a location are computed once per
// (pixel, part) and reused for kChannelChunk channels (the CPU kernel's layout).
constexpr int64_t kChannelChunk = 8;

// One thread per (n, channel chunk, output pixel), pixels fastest (coalesced);
// parts in increasing p, each part's taps once for the chunk's channels.
// theta, masks and offsets are in the accumulation type (see warp_companion).
template <typename scalar_t, typename acc_t>
__global__ void part_affine_warp_forward_kernel(
    const scalar_t* __restrict__ feat, const acc_t* __restrict__ theta,
    const acc_t* __restrict__ masks, const acc_t* __restrict__ offsets,
    scalar_t* __restrict__ out, uint8_t* __restrict__ winner, int64_t N, int64_t C, int64_t H,
    int64_t W, int64_t P, int64_t Ho, int64_t Wo) {
  const int64_t HWo = Ho * Wo;
  const int64_t chunks = (C + kChannelChunk - 1) / kChannelChunk;
  const int64_t total = N * chunks * HWo;
  DEFORMGAN_GRID_STRIDE_LOOP(i, total) {
    const int64_t pix = i % HWo;
    const int64_t chunk = (i / HWo) % chunks;
    const int64_t n = i / (HWo * chunks);
    const int64_t x = pix % Wo, y = pix / Wo;
    const int64_t c0 = chunk * kChannelChunk;
    const int64_t cn = C - c0 < kChannelChunk ? C - c0 : kChannelChunk;
    const scalar_t* plane0 = feat + (n * C + c0) * H * W;
    acc_t du = 0, dv = 0;
    if (offsets != nullptr) {
      du = static_cast<acc_t>(offsets[(n * 2 + 0) * HWo + pix]);
      dv = static_cast<acc_t>(offsets[(n * 2 + 1) * HWo + pix]);
    }
    acc_t best[kChannelChunk];
    int best_p[kChannelChunk];
DEFORMGAN_UNROLL
    for (int j = 0; j < kChannelChunk; ++j) {
      best[j] = -std::numeric_limits<acc_t>::infinity();
      best_p[j] = 0;
    }
    for (int64_t p = 0; p < P; ++p) {
      const acc_t m = static_cast<acc_t>(masks[(n * P + p) * HWo + pix]);
      if (m == acc_t(0)) {  // a zero-mask part contributes exactly 0, unsampled
DEFORMGAN_UNROLL
        for (int j = 0; j < kChannelChunk; ++j) {
          if (j < cn && candidate_wins(acc_t(0), best[j])) {
            best[j] = acc_t(0);
            best_p[j] = static_cast<int>(p);
          }
        }
        continue;
      }
      acc_t th[6];
      for (int k = 0; k < 6; ++k) th[k] = static_cast<acc_t>(theta[(n * P + p) * 6 + k]);
      const BilinearTaps<acc_t> t =
          location_taps(th, static_cast<acc_t>(x), static_cast<acc_t>(y), du, dv, H, W);
DEFORMGAN_UNROLL
      for (int j = 0; j < kChannelChunk; ++j) {
        if (j < cn) {
          acc_t f[4];
          taps_load(plane0 + j * H * W, t, f);
          const acc_t cand = masked_sample(m, t, f);
          if (candidate_wins(cand, best[j])) {
            best[j] = cand;
            best_p[j] = static_cast<int>(p);
          }
        }
      }
    }
    const int64_t o0 = (n * C + c0) * HWo + pix;
DEFORMGAN_UNROLL
    for (int j = 0; j < kChannelChunk; ++j) {
      if (j < cn) {
        out[o0 + j * HWo] = static_cast<scalar_t>(best[j]);
        winner[o0 + j * HWo] = static_cast<uint8_t>(best_p[j]);
      }
    }
  }
}

// One thread per (n, channel chunk, output pixel), as the forward: the thread walks
// its channels, reuses the taps while the winning part stays the same (the common
// case), and reduces its chunk's mask / location / offset gradients locally before
// one atomic add per run of equal winners (per chunk for the offsets). The feature
// gradient is scattered with atomics.
template <typename scalar_t, typename acc_t>
__global__ void part_affine_warp_backward_kernel(
    const scalar_t* __restrict__ grad_out, const scalar_t* __restrict__ feat,
    const acc_t* __restrict__ theta, const acc_t* __restrict__ masks,
    const acc_t* __restrict__ offsets, const uint8_t* __restrict__ winner,
    acc_t* __restrict__ gfeat, acc_t* __restrict__ gmask, acc_t* __restrict__ gloc,
    acc_t* __restrict__ goff, int64_t N, int64_t C, int64_t H, int64_t W, int64_t P, int64_t Ho,
    int64_t Wo) {
  const int64_t HWo = Ho * Wo;
  const int64_t chunks = (C + kChannelChunk - 1) / kChannelChunk;
  const int64_t total = N * chunks * HWo;
  DEFORMGAN_GRID_STRIDE_LOOP(i, total) {
    const int64_t pix = i % HWo;
    const int64_t chunk = (i / HWo) % chunks;
    const int64_t n = i / (HWo * chunks);
    const int64_t x = pix % Wo, y = pix / Wo;
    const int64_t c0 = chunk * kChannelChunk;
    const int64_t c1 = C - c0 < kChannelChunk ? C : c0 + kChannelChunk;
    acc_t du = 0, dv = 0;
    if (offsets != nullptr) {
      du = static_cast<acc_t>(offsets[(n * 2 + 0) * HWo + pix]);
      dv = static_cast<acc_t>(offsets[(n * 2 + 1) * HWo + pix]);
    }
    int64_t cur_p = -1;  // the part whose taps and partial sums are held
    BilinearTaps<acc_t> t = empty_taps<acc_t>();
    acc_t m = 0, sum_mask = 0, sum_u = 0, sum_v = 0, off_u = 0, off_v = 0;
    const auto flush = [&]() {
      if (cur_p < 0) return;
      if (gmask != nullptr) gpuAtomicAdd(gmask + (n * P + cur_p) * HWo + pix, sum_mask);
      if (gloc != nullptr) {
        gpuAtomicAdd(gloc + ((n * P + cur_p) * 2 + 0) * HWo + pix, sum_u);
        gpuAtomicAdd(gloc + ((n * P + cur_p) * 2 + 1) * HWo + pix, sum_v);
      }
      sum_mask = sum_u = sum_v = acc_t(0);
    };
    const bool need_samples = gmask != nullptr || gloc != nullptr || goff != nullptr;
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t o = (n * C + c) * HWo + pix;
      // No early exit on a zero incoming gradient: 0 * inf is NaN on every backend.
      const acc_t g = static_cast<acc_t>(grad_out[o]);
      const int64_t p = winner[o];
      if (p != cur_p) {
        flush();
        cur_p = p;
        acc_t th[6];
        for (int k = 0; k < 6; ++k) th[k] = static_cast<acc_t>(theta[(n * P + p) * 6 + k]);
        t = location_taps(th, static_cast<acc_t>(x), static_cast<acc_t>(y), du, dv, H, W);
        m = static_cast<acc_t>(masks[(n * P + p) * HWo + pix]);
      }
      const bool any = t.in[0] || t.in[1] || t.in[2] || t.in[3];
      // The feature gradient needs the taps' weights only: no feature is read for it.
      // The candidate of a zero-mask part does not depend on the sample.
      if (gfeat != nullptr && any && m != acc_t(0)) {
        const acc_t gm = g * m;
        acc_t* gplane = gfeat + (n * C + c) * H * W;
        for (int k = 0; k < 4; ++k) {
          if (t.in[k]) gpuAtomicAdd(gplane + t.idx[k], gm * t.w[k]);
        }
      }
      if (!need_samples) continue;
      acc_t f[4] = {acc_t(0), acc_t(0), acc_t(0), acc_t(0)};
      if (any) taps_load(feat + (n * C + c) * H * W, t, f);
      // The mask gradient before any exit: with no corner inside the sample is 0, and a
      // NaN incoming gradient still makes it NaN (as on the CPU and in the reference).
      if (gmask != nullptr) sum_mask += g * mask_grad_sample(m, taps_dot(t.w, f));
      // No corner inside: the sample is 0 whatever the location, so the location
      // gradient is exactly 0.
      if (!any || (gloc == nullptr && goff == nullptr)) continue;
      const acc_t gm = m == acc_t(0) ? acc_t(0) : g * m;
      const acc_t ds_du = taps_dot(t.du, f), ds_dv = taps_dot(t.dv, f);
      sum_u += gm * ds_du;
      sum_v += gm * ds_dv;
      off_u += gm * ds_du;
      off_v += gm * ds_dv;
    }
    flush();
    if (goff != nullptr) {
      gpuAtomicAdd(goff + (n * 2 + 0) * HWo + pix, off_u);
      gpuAtomicAdd(goff + (n * 2 + 1) * HWo + pix, off_v);
    }
  }
}

// grad_theta[n, p] = sum over pixels of (gu, gv) (x) (x, y, 1): one block per
// (n, p), a shared-memory reduction, no global atomics.
template <typename acc_t>
__global__ void part_affine_warp_theta_kernel(const acc_t* __restrict__ gloc,
                                              acc_t* __restrict__ grad_theta, int64_t Ho,
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
    for (int k = 0; k < 6; ++k) grad_theta[np * 6 + k] = s[k];
  }
}

// theta, masks or offsets in the accumulation type of features (float32 for
// float16/bfloat16 features, else the features' dtype), contiguous.
at::Tensor warp_companion(const at::Tensor& t, const at::Tensor& features) {
  return t.to(at::toOpMathType(features.scalar_type())).contiguous();
}

std::tuple<at::Tensor, at::Tensor> part_affine_warp_cuda(const at::Tensor& features_in,
                                                         const at::Tensor& theta_in,
                                                         const at::Tensor& masks_in,
                                                         const c10::optional<at::Tensor>& offsets_in) {
  check_part_affine_warp_inputs(features_in, theta_in, masks_in, offsets_in);
  TORCH_CHECK(features_in.is_cuda(), "features must be a CUDA tensor for the cuda kernel");
  c10::cuda::CUDAGuard guard(features_in.device());
  const at::Tensor features = features_in.contiguous();
  const at::Tensor theta = warp_companion(theta_in, features);
  const at::Tensor masks = warp_companion(masks_in, features);
  const bool has_offsets = offsets_in.has_value() && offsets_in->defined();
  const at::Tensor offsets = has_offsets ? warp_companion(*offsets_in, features) : at::Tensor();
  const int64_t N = features.size(0), C = features.size(1), H = features.size(2), W = features.size(3);
  const int64_t P = theta.size(1), Ho = masks.size(2), Wo = masks.size(3);
  at::Tensor output = at::empty({N, C, Ho, Wo}, features.options());
  at::Tensor winner = at::empty({N, C, Ho, Wo}, features.options().dtype(at::kByte));
  // computed in [N, C, Ho, Wo], returned in the features' layout (as on the CPU)
  const at::MemoryFormat layout = warp_layout(features_in);
  const int64_t total = output.numel();
  if (total == 0) return {output.contiguous(layout), winner.contiguous(layout)};
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, features.scalar_type(),
                                  "part_affine_warp_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const int64_t threads = N * ((C + kChannelChunk - 1) / kChannelChunk) * Ho * Wo;
    part_affine_warp_forward_kernel<scalar_t, acc_t><<<blocks_for(threads), kThreads, 0, stream>>>(
        features.data_ptr<scalar_t>(), theta.data_ptr<acc_t>(), masks.data_ptr<acc_t>(),
        has_offsets ? offsets.data_ptr<acc_t>() : nullptr, output.data_ptr<scalar_t>(),
        winner.data_ptr<uint8_t>(), N, C, H, W, P, Ho, Wo);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {output.contiguous(layout), winner.contiguous(layout)};
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
  if (need_features || ((need_masks || need_theta || need_offsets) && C > kChannelChunk)) {
    // The feature gradient is scattered with atomics, and so are the per-chunk sums of
    // the others when there is more than one chunk: their summation order varies.
    at::globalContext().alertNotDeterministic("deformgan_ops::_part_affine_warp_backward (CUDA)");
  }
  const at::Tensor grad_output = grad_output_in.to(features_in.scalar_type()).contiguous();
  const at::Tensor features = features_in.contiguous();
  const at::Tensor theta = warp_companion(theta_in, features);
  const at::Tensor masks = warp_companion(masks_in, features);
  const at::Tensor winner = winner_in.contiguous();
  const at::Tensor offsets = has_offsets ? warp_companion(*offsets_in, features) : at::Tensor();
  const auto acc_dtype = at::toOpMathType(features.scalar_type());
  const auto acc_opts = features.options().dtype(acc_dtype);
  const auto none = [&] { return at::empty({0}, features.options()); };
  // Accumulation buffers in the accumulation type (float for half/bfloat16).
  at::Tensor gfeat = need_features ? at::zeros({N, C, H, W}, acc_opts) : at::Tensor();
  at::Tensor gmask = need_masks ? at::zeros({N, P, Ho, Wo}, acc_opts) : at::Tensor();
  at::Tensor gloc = need_theta ? at::zeros({N, P, 2, Ho, Wo}, acc_opts) : at::Tensor();
  at::Tensor goff = need_offsets ? at::zeros({N, 2, Ho, Wo}, acc_opts) : at::Tensor();
  at::Tensor grad_theta = need_theta ? at::empty(theta.sizes(), theta.options()) : none();
  if (N > 0 && Ho * Wo > 0 && (need_features || need_masks || need_theta || need_offsets)) {
    auto stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, features.scalar_type(),
                                    "part_affine_warp_backward_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const int64_t total = N * ((C + kChannelChunk - 1) / kChannelChunk) * Ho * Wo;
      part_affine_warp_backward_kernel<scalar_t, acc_t><<<blocks_for(total), kThreads, 0, stream>>>(
          grad_output.data_ptr<scalar_t>(), features.data_ptr<scalar_t>(),
          theta.data_ptr<acc_t>(), masks.data_ptr<acc_t>(),
          has_offsets ? offsets.data_ptr<acc_t>() : nullptr, winner.data_ptr<uint8_t>(),
          need_features ? gfeat.data_ptr<acc_t>() : nullptr,
          need_masks ? gmask.data_ptr<acc_t>() : nullptr,
          need_theta ? gloc.data_ptr<acc_t>() : nullptr,
          need_offsets ? goff.data_ptr<acc_t>() : nullptr, N, C, H, W, P, Ho, Wo);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      if (need_theta) {
        part_affine_warp_theta_kernel<acc_t>
            <<<static_cast<unsigned int>(N * P), kThreads, 0, stream>>>(
                gloc.data_ptr<acc_t>(), grad_theta.data_ptr<acc_t>(), Ho, Wo);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
    });
  } else if (need_theta) {
    grad_theta.zero_();
  }
  // Each gradient in its input's dtype.
  return {need_features ? gfeat.to(features_in.scalar_type()).contiguous(warp_layout(features_in)) : none(),
          need_theta ? grad_theta.to(theta_in.scalar_type()) : grad_theta,
          need_masks ? gmask.to(masks_in.scalar_type()) : none(),
          need_offsets ? goff.to(offsets_in->scalar_type()) : none()};
}

}  // namespace

TORCH_LIBRARY_IMPL(deformgan_ops, CUDA, m) {
  m.impl("part_affine_warp", &part_affine_warp_cuda);
  m.impl("_part_affine_warp_backward", &part_affine_warp_backward_cuda);
}

}  // namespace deformgan_ops

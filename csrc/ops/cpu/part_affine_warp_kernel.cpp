// CPU kernels of part_affine_warp: forward and backward.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/AccumulateType.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include <array>
#include <limits>
#include <memory>
#include <vector>

#include "../checks.h"
#include "cpu_utils.h"
#include "../part_affine_warp_math.h"

namespace deformgan_ops {
namespace {

constexpr int64_t kChannelBlock = 8;

// Bilinear taps of every part at every pixel of one output row (index
// p * Wo + x), with the part's mask value; built once per row and shared by
// all channels. Parts whose mask is zero are not sampled unless asked. theta,
// masks and offsets are in the accumulation type (see warp_companion).
template <typename acc_t>
void row_taps(const acc_t* theta_n, const acc_t* masks_n, const acc_t* offsets_n,
              int64_t P, int64_t y, int64_t Ho, int64_t Wo, int64_t H, int64_t W,
              bool for_backward, BilinearTaps<acc_t>* taps, acc_t* mask_row, bool* sampled) {
  const int64_t plane_o = Ho * Wo;
  acc_t th[256 * 6];
  for (int64_t i = 0; i < P * 6; ++i) th[i] = theta_n[i];
  for (int64_t x = 0; x < Wo; ++x) {
    acc_t du = 0, dv = 0;
    if (offsets_n != nullptr) {
      du = offsets_n[y * Wo + x];
      dv = offsets_n[plane_o + y * Wo + x];
    }
    bool have_zero = false;
    for (int64_t p = 0; p < P; ++p) {
      const int64_t i = p * Wo + x;
      const acc_t mv = masks_n[p * plane_o + y * Wo + x];
      mask_row[i] = mv;
      // The forward samples parts with a nonzero mask. The backward also samples
      // the first zero-mask part (when it wins, d out / d mask = its sample);
      // no later zero candidate can win.
      const bool want = mv != acc_t(0) || (for_backward && !have_zero);
      const BilinearTaps<acc_t> t =
          want ? location_taps(th + p * 6, static_cast<acc_t>(x), static_cast<acc_t>(y), du, dv, H, W)
               : empty_taps<acc_t>();
      const bool any = t.in[0] || t.in[1] || t.in[2] || t.in[3];
      if (mv == acc_t(0) || !any) have_zero = true;
      sampled[i] = any;
      taps[i] = t;
    }
  }
}

// The parts that can win at one pixel, in increasing p:
//  - every sampled part with a nonzero mask (candidate mask * sample);
//  - the first part whose candidate is exactly zero (zero mask, or a finite mask
//    at a location with no corner inside); later zero candidates tie with it;
//  - a non-finite mask at a location with no corner inside: its candidate
//    mask * 0 is NaN, which wins, so no later part is listed.
template <typename acc_t>
struct WarpEntry {
  BilinearTaps<acc_t> t;     // the part's taps at the pixel (empty when not sampled)
  acc_t mask;
  acc_t constant;            // the candidate when not sampled
  int32_t part;
  uint8_t kind;              // kAllInside, kSomeInside or kConstant
};
constexpr uint8_t kAllInside = 0, kSomeInside = 1, kConstant = 2;

// The max over the entries of one pixel for B consecutive channels. The first
// entry initialises the running best (every pixel has at least one entry), so
// the B bests and winners live in registers. An entry whose four corners are
// inside (most) loads them plainly; one with corners outside reads only those
// inside (taps_load's rule), so nothing outside the image is ever read.
template <int B, typename scalar_t, typename acc_t>
inline void warp_pixel_block(const WarpEntry<acc_t>* entries, int64_t count, const scalar_t* plane0,
                             int64_t plane_stride, scalar_t* out, uint8_t* win, int64_t out_stride) {
  acc_t best[B] = {};  // set by the first entry
  int32_t best_p[B] = {};
  for (int64_t e = 0; e < count; ++e) {
    const WarpEntry<acc_t>& en = entries[e];
    acc_t cand[B];
    if (en.kind == kAllInside) {
#pragma GCC unroll 8
      for (int j = 0; j < B; ++j) {
        acc_t f[4];
        taps_load_inside(plane0 + j * plane_stride, en.t, f);
        cand[j] = masked_sample(en.mask, en.t, f);
      }
    } else if (en.kind == kSomeInside) {
      for (int j = 0; j < B; ++j) {
        acc_t f[4];
        taps_load(plane0 + j * plane_stride, en.t, f);
        cand[j] = masked_sample(en.mask, en.t, f);
      }
    } else {
      for (int j = 0; j < B; ++j) cand[j] = en.constant;
    }
#pragma GCC unroll 8
    for (int j = 0; j < B; ++j) {
      const bool wins = e == 0 || candidate_wins(cand[j], best[j]);  // branch-free update
      best[j] = wins ? cand[j] : best[j];
      best_p[j] = wins ? en.part : best_p[j];
    }
  }
#pragma GCC unroll 8
  for (int j = 0; j < B; ++j) {
    out[j * out_stride] = static_cast<scalar_t>(best[j]);
    win[j * out_stride] = static_cast<uint8_t>(best_p[j]);
  }
}

// theta, masks or offsets in the accumulation type of features (float32 for
// float16/bfloat16 features, else the features' dtype), contiguous.
at::Tensor warp_companion(const at::Tensor& t, const at::Tensor& features) {
  return t.to(at::toOpMathType(features.scalar_type())).contiguous();
}

std::tuple<at::Tensor, at::Tensor> part_affine_warp_cpu(const at::Tensor& features_in,
                                                        const at::Tensor& theta_in,
                                                        const at::Tensor& masks_in,
                                                        const c10::optional<at::Tensor>& offsets_in) {
  check_part_affine_warp_inputs(features_in, theta_in, masks_in, offsets_in);
  TORCH_CHECK(features_in.device().is_cpu(), "features must be a CPU tensor for the cpu kernel");
  const at::Tensor features = features_in.contiguous();
  const at::Tensor theta = warp_companion(theta_in, features);
  const at::Tensor masks = warp_companion(masks_in, features);
  const bool has_offsets = offsets_in.has_value() && offsets_in->defined();
  const at::Tensor offsets = has_offsets ? warp_companion(*offsets_in, features) : at::Tensor();

  const int64_t N = features.size(0), C = features.size(1), H = features.size(2),
                W = features.size(3);
  const int64_t P = theta.size(1), Ho = masks.size(2), Wo = masks.size(3);
  at::Tensor output = at::empty({N, C, Ho, Wo}, features.options());
  at::Tensor winner = at::empty({N, C, Ho, Wo}, features.options().dtype(at::kByte));
  if (output.numel() == 0) return {output, winner};

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, features.scalar_type(), "part_affine_warp_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* feat = features.data_ptr<scalar_t>();
    const acc_t* th = theta.data_ptr<acc_t>();
    const acc_t* mk = masks.data_ptr<acc_t>();
    const acc_t* off = has_offsets ? offsets.data_ptr<acc_t>() : nullptr;
    scalar_t* out = output.data_ptr<scalar_t>();
    uint8_t* win = winner.data_ptr<uint8_t>();
    // One task per (n, y) output row.
    at::parallel_for(0, N * Ho, 1, [&](int64_t begin, int64_t end) {
      std::vector<BilinearTaps<acc_t>> taps(P * Wo);
      std::vector<acc_t> mask_row(P * Wo);
      std::unique_ptr<bool[]> sampled(new bool[P * Wo]);
      std::vector<WarpEntry<acc_t>> entries;
      entries.reserve(Wo * 3);
      std::vector<int64_t> first(Wo + 1);
      for (int64_t row = begin; row < end; ++row) {
        const int64_t n = row / Ho, y = row % Ho;
        row_taps<acc_t>(th + n * P * 6, mk + n * P * Ho * Wo, off ? off + n * 2 * Ho * Wo : nullptr, P, y,
                        Ho, Wo, H, W, /*for_backward=*/false, taps.data(), mask_row.data(),
                                  sampled.get());
        entries.clear();
        for (int64_t x = 0; x < Wo; ++x) {
          first[x] = static_cast<int64_t>(entries.size());
          bool have_zero = false;
          for (int64_t p = 0; p < P; ++p) {
            const int64_t i = p * Wo + x;
            WarpEntry<acc_t> en;
            en.part = static_cast<int32_t>(p);
            en.mask = mask_row[i];
            en.constant = acc_t(0);
            const BilinearTaps<acc_t>& t = taps[i];
            en.t = t;
            if (mask_row[i] != acc_t(0) && sampled[i]) {
              en.kind = (t.in[0] && t.in[1] && t.in[2] && t.in[3]) ? kAllInside : kSomeInside;
              entries.push_back(en);
              continue;
            }
            en.kind = kConstant;
            // Not sampled: the candidate is exactly 0 for a zero mask, else mask * 0.
            en.constant = mask_row[i] == acc_t(0) ? acc_t(0) : mask_row[i] * acc_t(0);
            if (en.constant == acc_t(0)) {
              if (have_zero) continue;
              have_zero = true;
              entries.push_back(en);
            } else {  // NaN: it wins, and no later part can replace it
              entries.push_back(en);
              break;
            }
          }
        }
        first[Wo] = static_cast<int64_t>(entries.size());
        // Channels in blocks of kChannelBlock, then pixels, then entries, then the
        // channels of the block: an entry's taps stay in registers, and one block
        // touches few feature planes at a time.
        const scalar_t* feat_n = feat + n * C * H * W;
        const int64_t out_n = n * C * Ho * Wo + y * Wo;
        int64_t c0 = 0;
        for (; c0 + kChannelBlock <= C; c0 += kChannelBlock) {
          for (int64_t x = 0; x < Wo; ++x) {
            warp_pixel_block<kChannelBlock>(entries.data() + first[x], first[x + 1] - first[x],
                                            feat_n + c0 * H * W, H * W,
                                            out + out_n + c0 * Ho * Wo + x,
                                            win + out_n + c0 * Ho * Wo + x, Ho * Wo);
          }
        }
        for (; c0 < C; ++c0) {
          for (int64_t x = 0; x < Wo; ++x) {
            warp_pixel_block<1>(entries.data() + first[x], first[x + 1] - first[x],
                                feat_n + c0 * H * W, H * W, out + out_n + c0 * Ho * Wo + x,
                                win + out_n + c0 * Ho * Wo + x, Ho * Wo);
          }
        }
      }
    });
  });
  return {output, winner};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> part_affine_warp_backward_cpu(
    const at::Tensor& grad_output_in, const at::Tensor& features_in, const at::Tensor& theta_in,
    const at::Tensor& masks_in, const c10::optional<at::Tensor>& offsets_in,
    const at::Tensor& winner_in, std::array<bool, 4> output_mask) {
  check_part_affine_warp_backward_inputs(grad_output_in, features_in, theta_in, masks_in, offsets_in, winner_in);
  const int64_t N = features_in.size(0), C = features_in.size(1), H = features_in.size(2),
                W = features_in.size(3);
  const int64_t P = theta_in.size(1), Ho = masks_in.size(2), Wo = masks_in.size(3);
  const at::Tensor grad_output = grad_output_in.to(features_in.scalar_type()).contiguous();
  const at::Tensor features = features_in.contiguous();
  const at::Tensor theta = warp_companion(theta_in, features);
  const at::Tensor masks = warp_companion(masks_in, features);
  const at::Tensor winner = winner_in.contiguous();
  const bool has_offsets = offsets_in.has_value() && offsets_in->defined();
  const at::Tensor offsets = has_offsets ? warp_companion(*offsets_in, features) : at::Tensor();

  const bool need_features = output_mask[0], need_theta = output_mask[1],
             need_masks = output_mask[2], need_offsets = output_mask[3] && has_offsets;
  const bool need_location = need_theta || need_offsets;
  const auto none = [&] { return at::empty({0}, features.options()); };
  // Every gradient is computed in the accumulation type (theta's, masks' and
  // offsets' here) and returned in its input's dtype. grad_features is scattered
  // into; every element of the others is written below.
  at::Tensor grad_features = need_features ? at::zeros_like(features, theta.options()) : none();
  at::Tensor grad_theta = need_theta ? at::empty_like(theta) : none();
  at::Tensor grad_masks = need_masks ? at::empty_like(masks) : none();
  at::Tensor grad_offsets = need_offsets ? at::empty_like(offsets) : none();
  const auto in_dtype = [&](const at::Tensor& grad, const at::Tensor& input, bool needed) {
    return needed ? grad.to(input.scalar_type()) : grad;
  };
  const auto result = [&] {
    return std::make_tuple(in_dtype(grad_features, features_in, need_features), in_dtype(grad_theta, theta_in, need_theta),
                           in_dtype(grad_masks, masks_in, need_masks),
                           in_dtype(grad_offsets, need_offsets ? *offsets_in : features_in, need_offsets));
  };
  if (N == 0) return result();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, features.scalar_type(), "part_affine_warp_backward_cpu",
                                  [&] {
    using acc_t = at::opmath_type<scalar_t>;
    using sum_t = at::acc_type<acc_t, /*is_cuda=*/false>;
    const scalar_t* feat = features.data_ptr<scalar_t>();
    const acc_t* th = theta.data_ptr<acc_t>();
    const acc_t* mk = masks.data_ptr<acc_t>();
    const acc_t* off = has_offsets ? offsets.data_ptr<acc_t>() : nullptr;
    const scalar_t* go = grad_output.data_ptr<scalar_t>();
    const uint8_t* win = winner.data_ptr<uint8_t>();
    acc_t* gfeat = need_features ? grad_features.data_ptr<acc_t>() : nullptr;
    acc_t* gth = need_theta ? grad_theta.data_ptr<acc_t>() : nullptr;
    acc_t* gmk = need_masks ? grad_masks.data_ptr<acc_t>() : nullptr;
    acc_t* goff = need_offsets ? grad_offsets.data_ptr<acc_t>() : nullptr;
    // Parallel over the batch: each task owns grad_features[n], grad_theta[n],
    // grad_masks[n] and grad_offsets[n], so no atomics are needed.
    at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
      std::vector<BilinearTaps<acc_t>> taps(P * Wo);
      std::vector<acc_t> mask_row(P * Wo);
      std::unique_ptr<bool[]> sampled(new bool[P * Wo]);
      // Per-row sums over channels, indexed p * Wo + x.
      std::vector<acc_t> gmask_row(P * Wo), gu_row(P * Wo), gv_row(P * Wo);
      std::vector<sum_t> theta_acc(P * 6);
      for (int64_t n = begin; n < end; ++n) {
        std::fill(theta_acc.begin(), theta_acc.end(), sum_t(0));
        for (int64_t y = 0; y < Ho; ++y) {
          row_taps<acc_t>(th + n * P * 6, mk + n * P * Ho * Wo, off ? off + n * 2 * Ho * Wo : nullptr, P, y,
                          Ho, Wo, H, W, /*for_backward=*/true, taps.data(), mask_row.data(),
                                    sampled.get());
          std::fill(gmask_row.begin(), gmask_row.end(), acc_t(0));
          std::fill(gu_row.begin(), gu_row.end(), acc_t(0));
          std::fill(gv_row.begin(), gv_row.end(), acc_t(0));
          for (int64_t c = 0; c < C; ++c) {
            const scalar_t* plane = feat + (n * C + c) * H * W;
            acc_t* gplane = need_features ? gfeat + (n * C + c) * H * W : nullptr;
            const int64_t row_off = ((n * C + c) * Ho + y) * Wo;
            for (int64_t x = 0; x < Wo; ++x) {
              const acc_t g = static_cast<acc_t>(go[row_off + x]);
              const int64_t i = static_cast<int64_t>(win[row_off + x]) * Wo + x;
              // Parts that were not sampled (no corner inside) have all-zero taps
              // with no corner inside: nothing is read or scattered for them.
              const BilinearTaps<acc_t>& t = taps[i];
              acc_t f[4];
              taps_load(plane, t, f);
              if (need_masks) gmask_row[i] += g * mask_grad_sample(mask_row[i], taps_dot(t.w, f));
              // The candidate of a zero-mask part does not depend on the sample.
              const acc_t gm = mask_row[i] == acc_t(0) ? acc_t(0) : g * mask_row[i];
              if (need_features) {
                for (int k = 0; k < 4; ++k) {
                  if (t.in[k]) gplane[t.idx[k]] += gm * t.w[k];
                }
              }
              if (need_location) {
                gu_row[i] += gm * taps_dot(t.du, f);
                gv_row[i] += gm * taps_dot(t.dv, f);
              }
            }
          }
          if (gmk != nullptr) {
            acc_t* gmk_row = gmk + n * P * Ho * Wo + y * Wo;
            for (int64_t p = 0; p < P; ++p) {
              for (int64_t x = 0; x < Wo; ++x) gmk_row[p * Ho * Wo + x] = gmask_row[p * Wo + x];
            }
          }
          if (gth != nullptr) {
            for (int64_t p = 0; p < P; ++p) {
              sum_t* ta = theta_acc.data() + p * 6;
              for (int64_t x = 0; x < Wo; ++x) {
                const sum_t gu = gu_row[p * Wo + x], gv = gv_row[p * Wo + x];
                ta[0] += gu * x;
                ta[1] += gu * y;
                ta[2] += gu;
                ta[3] += gv * x;
                ta[4] += gv * y;
                ta[5] += gv;
              }
            }
          }
          if (goff != nullptr) {
            acc_t* goff_n = goff + n * 2 * Ho * Wo + y * Wo;
            for (int64_t x = 0; x < Wo; ++x) {
              sum_t su = 0, sv = 0;
              for (int64_t p = 0; p < P; ++p) {
                su += gu_row[p * Wo + x];
                sv += gv_row[p * Wo + x];
              }
              goff_n[x] = static_cast<acc_t>(su);
              goff_n[Ho * Wo + x] = static_cast<acc_t>(sv);
            }
          }
        }
        if (gth != nullptr) {
          for (int64_t i = 0; i < P * 6; ++i) gth[n * P * 6 + i] = static_cast<acc_t>(theta_acc[i]);
        }
      }
    });
  });
  return result();
}

}  // namespace

TORCH_LIBRARY_IMPL(deformgan_ops, CPU, m) {
  m.impl("part_affine_warp", &part_affine_warp_cpu);
  m.impl("_part_affine_warp_backward", &part_affine_warp_backward_cpu);
}

}  // namespace deformgan_ops

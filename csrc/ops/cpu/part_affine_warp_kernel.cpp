// CPU kernels of part_affine_warp: forward and backward.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/AccumulateType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include <limits>
#include <vector>

#include "../checks.h"
#include "../part_affine_warp_math.h"

namespace deformgan_ops {
namespace {

// Sampling corners of every part at every pixel of one output row, with the
// part's mask value; built once per row and shared by all channels.
template <typename scalar_t, typename acc_t>
void row_corners(const scalar_t* theta_n, const scalar_t* masks_n, const scalar_t* offsets_n,
                 int64_t P, int64_t y, int64_t Ho, int64_t Wo, int64_t H, int64_t W,
                 bool sample_zero_masks, std::vector<BilinearCorners<acc_t>>& corners,
                 std::vector<acc_t>& mask_row) {
  const int64_t plane_o = Ho * Wo;
  for (int64_t p = 0; p < P; ++p) {
    acc_t th[6];
    for (int i = 0; i < 6; ++i) th[i] = static_cast<acc_t>(theta_n[p * 6 + i]);
    const scalar_t* m = masks_n + p * plane_o + y * Wo;
    for (int64_t x = 0; x < Wo; ++x) {
      const acc_t mv = static_cast<acc_t>(m[x]);
      mask_row[p * Wo + x] = mv;
      BilinearCorners<acc_t>& c = corners[p * Wo + x];
      if (mv == acc_t(0) && !sample_zero_masks) {
        c.any = false;
        continue;
      }
      acc_t du = 0, dv = 0;
      if (offsets_n != nullptr) {
        du = static_cast<acc_t>(offsets_n[y * Wo + x]);
        dv = static_cast<acc_t>(offsets_n[plane_o + y * Wo + x]);
      }
      acc_t u, v;
      affine_location(th, static_cast<acc_t>(x), static_cast<acc_t>(y), du, dv, u, v);
      c = bilinear_corners(u, v, H, W);
    }
  }
}

std::tuple<at::Tensor, at::Tensor> part_affine_warp_cpu(const at::Tensor& features_in,
                                                        const at::Tensor& theta_in,
                                                        const at::Tensor& masks_in,
                                                        const c10::optional<at::Tensor>& offsets_in) {
  check_part_affine_warp_inputs(features_in, theta_in, masks_in, offsets_in);
  TORCH_CHECK(features_in.device().is_cpu(), "features must be a CPU tensor for the cpu kernel");
  const at::Tensor features = features_in.contiguous();
  const at::Tensor theta = theta_in.contiguous();
  const at::Tensor masks = masks_in.contiguous();
  const bool has_offsets = offsets_in.has_value() && offsets_in->defined();
  const at::Tensor offsets = has_offsets ? offsets_in->contiguous() : at::Tensor();

  const int64_t N = features.size(0), C = features.size(1), H = features.size(2),
                W = features.size(3);
  const int64_t P = theta.size(1), Ho = masks.size(2), Wo = masks.size(3);
  at::Tensor output = at::empty({N, C, Ho, Wo}, features.options());
  at::Tensor winner = at::empty({N, C, Ho, Wo}, features.options().dtype(at::kByte));
  if (output.numel() == 0) return {output, winner};

  AT_DISPATCH_FLOATING_TYPES(features.scalar_type(), "part_affine_warp_cpu", [&] {
    using acc_t = scalar_t;
    const scalar_t* feat = features.data_ptr<scalar_t>();
    const scalar_t* th = theta.data_ptr<scalar_t>();
    const scalar_t* mk = masks.data_ptr<scalar_t>();
    const scalar_t* off = has_offsets ? offsets.data_ptr<scalar_t>() : nullptr;
    scalar_t* out = output.data_ptr<scalar_t>();
    uint8_t* win = winner.data_ptr<uint8_t>();
    // One task per (n, y) output row.
    at::parallel_for(0, N * Ho, 1, [&](int64_t begin, int64_t end) {
      std::vector<BilinearCorners<acc_t>> corners(P * Wo);
      std::vector<acc_t> mask_row(P * Wo);
      for (int64_t row = begin; row < end; ++row) {
        const int64_t n = row / Ho, y = row % Ho;
        row_corners<scalar_t, acc_t>(th + n * P * 6, mk + n * P * Ho * Wo,
                                     off ? off + n * 2 * Ho * Wo : nullptr, P, y, Ho, Wo, H, W,
                                     /*sample_zero_masks=*/false, corners, mask_row);
        for (int64_t c = 0; c < C; ++c) {
          const scalar_t* plane = feat + (n * C + c) * H * W;
          scalar_t* out_row = out + ((n * C + c) * Ho + y) * Wo;
          uint8_t* win_row = win + ((n * C + c) * Ho + y) * Wo;
          for (int64_t x = 0; x < Wo; ++x) {
            acc_t best = -std::numeric_limits<acc_t>::infinity();
            int64_t best_p = 0;
            for (int64_t p = 0; p < P; ++p) {
              const acc_t cand = part_candidate(plane, corners[p * Wo + x], mask_row[p * Wo + x]);
              if (candidate_wins(cand, best)) {
                best = cand;
                best_p = p;
              }
            }
            out_row[x] = static_cast<scalar_t>(best);
            win_row[x] = static_cast<uint8_t>(best_p);
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
    const at::Tensor& winner_in) {
  check_part_affine_warp_inputs(features_in, theta_in, masks_in, offsets_in);
  const int64_t N = features_in.size(0), C = features_in.size(1), H = features_in.size(2),
                W = features_in.size(3);
  const int64_t P = theta_in.size(1), Ho = masks_in.size(2), Wo = masks_in.size(3);
  TORCH_CHECK(grad_output_in.sizes() == at::IntArrayRef({N, C, Ho, Wo}),
              "grad_output must have shape [N, C, Ho, Wo] = [", N, ", ", C, ", ", Ho, ", ", Wo,
              "], got ", grad_output_in.sizes());
  TORCH_CHECK(winner_in.sizes() == grad_output_in.sizes() && winner_in.scalar_type() == at::kByte,
              "winner must be a uint8 tensor of shape ", grad_output_in.sizes(), ", got ",
              winner_in.scalar_type(), " ", winner_in.sizes());
  const at::Tensor grad_output = grad_output_in.to(features_in.scalar_type()).contiguous();
  const at::Tensor features = features_in.contiguous();
  const at::Tensor theta = theta_in.contiguous();
  const at::Tensor masks = masks_in.contiguous();
  const at::Tensor winner = winner_in.contiguous();
  const bool has_offsets = offsets_in.has_value() && offsets_in->defined();
  const at::Tensor offsets = has_offsets ? offsets_in->contiguous() : at::Tensor();

  at::Tensor grad_features = at::zeros_like(features);
  at::Tensor grad_theta = at::zeros_like(theta);
  at::Tensor grad_masks = at::zeros_like(masks);
  at::Tensor grad_offsets =
      has_offsets ? at::zeros_like(offsets) : at::empty({0}, features.options());
  if (N == 0) return {grad_features, grad_theta, grad_masks, grad_offsets};

  AT_DISPATCH_FLOATING_TYPES(features.scalar_type(), "part_affine_warp_backward_cpu", [&] {
    using acc_t = scalar_t;
    using sum_t = at::acc_type<scalar_t, /*is_cuda=*/false>;
    const scalar_t* feat = features.data_ptr<scalar_t>();
    const scalar_t* th = theta.data_ptr<scalar_t>();
    const scalar_t* mk = masks.data_ptr<scalar_t>();
    const scalar_t* off = has_offsets ? offsets.data_ptr<scalar_t>() : nullptr;
    const scalar_t* go = grad_output.data_ptr<scalar_t>();
    const uint8_t* win = winner.data_ptr<uint8_t>();
    scalar_t* gfeat = grad_features.data_ptr<scalar_t>();
    scalar_t* gth = grad_theta.data_ptr<scalar_t>();
    scalar_t* gmk = grad_masks.data_ptr<scalar_t>();
    scalar_t* goff = has_offsets ? grad_offsets.data_ptr<scalar_t>() : nullptr;
    // Parallel over the batch: each task owns grad_features[n], grad_theta[n],
    // grad_masks[n] and grad_offsets[n], so no atomics are needed.
    at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
      std::vector<BilinearCorners<acc_t>> corners(P * Wo);
      std::vector<acc_t> mask_row(P * Wo);
      std::vector<sum_t> theta_acc(P * 6);
      std::vector<sum_t> du_acc(Wo), dv_acc(Wo);
      for (int64_t n = begin; n < end; ++n) {
        std::fill(theta_acc.begin(), theta_acc.end(), sum_t(0));
        for (int64_t y = 0; y < Ho; ++y) {
          // Zero-mask parts are sampled too: when one wins, d out / d mask = sample.
          row_corners<scalar_t, acc_t>(th + n * P * 6, mk + n * P * Ho * Wo,
                                       off ? off + n * 2 * Ho * Wo : nullptr, P, y, Ho, Wo, H,
                                       W, /*sample_zero_masks=*/true, corners, mask_row);
          std::fill(du_acc.begin(), du_acc.end(), sum_t(0));
          std::fill(dv_acc.begin(), dv_acc.end(), sum_t(0));
          scalar_t* gmk_n = gmk + n * P * Ho * Wo + y * Wo;
          for (int64_t c = 0; c < C; ++c) {
            const scalar_t* plane = feat + (n * C + c) * H * W;
            scalar_t* gplane = gfeat + (n * C + c) * H * W;
            const int64_t row_off = ((n * C + c) * Ho + y) * Wo;
            for (int64_t x = 0; x < Wo; ++x) {
              const acc_t g = static_cast<acc_t>(go[row_off + x]);
              if (g == acc_t(0)) continue;
              const int64_t p = win[row_off + x];
              const BilinearCorners<acc_t>& cr = corners[p * Wo + x];
              if (!cr.any) continue;  // the sample, and all its derivatives, are 0
              const acc_t m = mask_row[p * Wo + x];
              acc_t f[4], w[4];
              corner_values(plane, cr, f);
              bilinear_weights(cr, w);
              const acc_t s = w[0] * f[0] + w[1] * f[1] + w[2] * f[2] + w[3] * f[3];
              gmk_n[p * Ho * Wo + x] += static_cast<scalar_t>(g * s);
              if (m == acc_t(0)) continue;
              const acc_t gm = g * m;
              for (int i = 0; i < 4; ++i) {
                if (cr.idx[i] >= 0) gplane[cr.idx[i]] += static_cast<scalar_t>(gm * w[i]);
              }
              acc_t ds_du, ds_dv;
              bilinear_grad_location(cr, f, ds_du, ds_dv);
              const sum_t gu = static_cast<sum_t>(gm * ds_du);
              const sum_t gv = static_cast<sum_t>(gm * ds_dv);
              sum_t* ta = theta_acc.data() + p * 6;
              ta[0] += gu * x;
              ta[1] += gu * y;
              ta[2] += gu;
              ta[3] += gv * x;
              ta[4] += gv * y;
              ta[5] += gv;
              du_acc[x] += gu;
              dv_acc[x] += gv;
            }
          }
          if (goff != nullptr) {
            scalar_t* goff_n = goff + n * 2 * Ho * Wo + y * Wo;
            for (int64_t x = 0; x < Wo; ++x) {
              goff_n[x] = static_cast<scalar_t>(du_acc[x]);
              goff_n[Ho * Wo + x] = static_cast<scalar_t>(dv_acc[x]);
            }
          }
        }
        for (int64_t i = 0; i < P * 6; ++i) gth[n * P * 6 + i] = static_cast<scalar_t>(theta_acc[i]);
      }
    });
  });
  return {grad_features, grad_theta, grad_masks, grad_offsets};
}

}  // namespace

TORCH_LIBRARY_IMPL(deformgan_ops, CPU, m) {
  m.impl("part_affine_warp", &part_affine_warp_cpu);
  m.impl("_part_affine_warp_backward", &part_affine_warp_backward_cpu);
}

}  // namespace deformgan_ops

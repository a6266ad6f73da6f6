// CPU kernels of nn_loss: per-pixel nearest-neighbour distance and its backward.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <array>
#include <limits>
#include <vector>

#include "../checks.h"
#include "cpu_utils.h"
#include "../nn_loss_math.h"

namespace deformgan_ops {
namespace {

// a[x] += sum_{j < channels} |t[j * stride + x] - g[j * stride + x]| for x in
// [0, n), four channels per pass so that a[] is loaded and stored once per four.
template <typename scalar_t, typename acc_t>
DEFORMGAN_CPU_CLONES void accumulate_abs_diff(acc_t* __restrict__ a, const scalar_t* __restrict__ t,
                                              const scalar_t* __restrict__ g, int64_t n,
                                              int64_t channels, int64_t stride) {
  int64_t j = 0;
  for (; j + 4 <= channels; j += 4) {
    const scalar_t* t0 = t + j * stride;
    const scalar_t* g0 = g + j * stride;
    for (int64_t x = 0; x < n; ++x) {
      a[x] += (abs_diff<acc_t>(t0[x], g0[x]) + abs_diff<acc_t>(t0[stride + x], g0[stride + x])) +
              (abs_diff<acc_t>(t0[2 * stride + x], g0[2 * stride + x]) +
               abs_diff<acc_t>(t0[3 * stride + x], g0[3 * stride + x]));
    }
  }
  for (; j < channels; ++j) {
    for (int64_t x = 0; x < n; ++x) a[x] += abs_diff<acc_t>(t[j * stride + x], g[j * stride + x]);
  }
}

// One channel plane of the backward: grad reaches generated at p and target at
// q[p]; compiled once per combination of the two gradients asked for.
template <typename scalar_t, typename acc_t, bool kGen, bool kTgt>
void nn_loss_backward_plane(const scalar_t* __restrict__ grad, const int32_t* __restrict__ q,
                            const scalar_t* __restrict__ g, const scalar_t* __restrict__ t,
                            scalar_t* __restrict__ gg, acc_t* __restrict__ gt, int64_t HW) {
  for (int64_t p = 0; p < HW; ++p) {
    if (q[p] < 0) {  // not a window position inside the image: no gradient
      if (kGen) gg[p] = scalar_t(0);
      continue;
    }
    const acc_t v = static_cast<acc_t>(grad[p]) * abs_diff_grad_generated<acc_t>(t[q[p]], g[p]);
    if (kGen) gg[p] = static_cast<scalar_t>(v);
    if (kTgt) gt[q[p]] -= v;
  }
}

std::tuple<at::Tensor, at::Tensor> nn_loss_cpu(const at::Tensor& generated_in,
                                               const at::Tensor& target_in, int64_t kernel_size) {
  check_nn_loss_inputs(generated_in, target_in, kernel_size);
  TORCH_CHECK(generated_in.device().is_cpu(), "generated must be a CPU tensor for the cpu kernel");
  const at::Tensor generated = generated_in.contiguous();
  const at::Tensor target = target_in.contiguous();
  const int64_t N = generated.size(0), C = generated.size(1), H = generated.size(2),
                W = generated.size(3);
  const int64_t k = kernel_size, KK = k * k;
  at::Tensor distance = at::empty({N, H, W}, generated.options());
  at::Tensor argmin = at::empty({N, H, W}, generated.options().dtype(at::kInt));
  if (distance.numel() == 0) return {distance, argmin};
  // float16/bfloat16 inputs are read as they are; the distances are summed and
  // compared in float32 (at::opmath_type) and rounded once when written.
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, generated.scalar_type(), "nn_loss_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* gen = generated.data_ptr<scalar_t>();
    const scalar_t* tgt = target.data_ptr<scalar_t>();
    scalar_t* dist = distance.data_ptr<scalar_t>();
    int32_t* amin = argmin.data_ptr<int32_t>();
    std::vector<int64_t> offsets_y(KK), offsets_x(KK);
    for (int32_t o = 0; o < KK; ++o) window_offset(o, k, offsets_y[o], offsets_x[o]);
    // One task per (n, y) row; the scratch holds k*k distances for one row only.
    at::parallel_for(0, N * H, 1, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> acc(KK * W);
      std::vector<acc_t> best_row(W);
      for (int64_t row = begin; row < end; ++row) {
        const int64_t n = row / H, y = row % H;
        std::fill(acc.begin(), acc.end(), acc_t(0));
        for (int32_t o = 0; o < KK; ++o) {
          const int64_t dy = offsets_y[o], dx = offsets_x[o];
          if (y + dy < 0 || y + dy >= H) continue;
          const int64_t x_lo = std::max<int64_t>(0, -dx), x_hi = std::min<int64_t>(W, W - dx);
          acc_t* a = acc.data() + o * W;
          const scalar_t* g = gen + (n * C * H + y) * W;
          const scalar_t* t = tgt + (n * C * H + y + dy) * W + dx;
          accumulate_abs_diff<scalar_t, acc_t>(a + x_lo, t + x_lo, g + x_lo, x_hi - x_lo, C, H * W);
        }
        // Running minimum over the window in row-major order (nn_candidate_wins:
        // the first of equal distances, the first NaN); offsets outside the image
        // are skipped; best_o < 0 until the first position inside.
        acc_t* __restrict__ best = best_row.data();
        int32_t* __restrict__ best_o = amin + row * W;
        for (int64_t x = 0; x < W; ++x) {
          best[x] = std::numeric_limits<acc_t>::infinity();
          best_o[x] = -1;
        }
        for (int32_t o = 0; o < KK; ++o) {
          const int64_t dy = offsets_y[o], dx = offsets_x[o];
          if (y + dy < 0 || y + dy >= H) continue;
          const int64_t x_lo = std::max<int64_t>(0, -dx), x_hi = std::min<int64_t>(W, W - dx);
          const acc_t* __restrict__ a = acc.data() + o * W;
          for (int64_t x = x_lo; x < x_hi; ++x) {
            const bool better = nn_candidate_wins(a[x], best[x], best_o[x] >= 0);
            best[x] = better ? a[x] : best[x];
            best_o[x] = better ? o : best_o[x];
          }
        }
        scalar_t* __restrict__ d = dist + row * W;
        for (int64_t x = 0; x < W; ++x) d[x] = static_cast<scalar_t>(best[x]);
      }
    });
  });
  return {distance, argmin};
}

std::tuple<at::Tensor, at::Tensor> nn_loss_backward_cpu(const at::Tensor& grad_distance_in,
                                                        const at::Tensor& generated_in,
                                                        const at::Tensor& target_in,
                                                        const at::Tensor& argmin_in,
                                                        int64_t kernel_size,
                                                        std::array<bool, 2> output_mask) {
  check_nn_loss_backward_inputs(grad_distance_in, generated_in, target_in, argmin_in, kernel_size);
  const int64_t N = generated_in.size(0), C = generated_in.size(1), H = generated_in.size(2),
                W = generated_in.size(3);
  const at::Tensor generated = generated_in.contiguous();
  const at::Tensor target = target_in.contiguous();
  const at::Tensor grad_distance = grad_distance_in.to(generated.scalar_type()).contiguous();
  const at::Tensor argmin = argmin_in.contiguous();
  const bool need_generated = output_mask[0], need_target = output_mask[1];
  // grad_generated is fully written below; grad_target is scattered into, in the
  // accumulation type (float32 for float16/bfloat16), and returned in the target's.
  const auto acc_dtype = at::toOpMathType(generated.scalar_type());
  at::Tensor grad_generated =
      need_generated ? at::empty(generated.sizes(), generated.options()) : at::empty({0}, generated.options());
  at::Tensor grad_target =
      need_target ? at::zeros(target.sizes(), target.options().dtype(acc_dtype)) : at::empty({0}, target.options());
  const auto result = [&] {
    return std::make_tuple(grad_generated, need_target ? grad_target.to(target.scalar_type()) : grad_target);
  };
  if (generated.numel() == 0 || !(need_generated || need_target)) return result();
  const int64_t k = kernel_size;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, generated.scalar_type(), "nn_loss_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* gen = generated.data_ptr<scalar_t>();
    const scalar_t* tgt = target.data_ptr<scalar_t>();
    const scalar_t* gd = grad_distance.data_ptr<scalar_t>();
    const int32_t* amin = argmin.data_ptr<int32_t>();
    scalar_t* ggen = need_generated ? grad_generated.data_ptr<scalar_t>() : nullptr;
    acc_t* gtgt = need_target ? grad_target.data_ptr<acc_t>() : nullptr;
    std::vector<int64_t> offsets_y(k * k), offsets_x(k * k);
    for (int32_t o = 0; o < k * k; ++o) window_offset(o, k, offsets_y[o], offsets_x[o]);
    // Parallel over the batch: each task owns grad_target[n] (the scattered one).
    at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
      std::vector<int32_t> match(H * W);  // flat index of the winning q of each pixel
      for (int64_t n = begin; n < end; ++n) {
        for (int64_t y = 0; y < H; ++y) {
          for (int64_t x = 0; x < W; ++x) {
            const int32_t o = amin[n * H * W + y * W + x];
            const bool known = o >= 0 && o < k * k;
            const int64_t dy = known ? offsets_y[o] : 0, dx = known ? offsets_x[o] : 0;
            // An argmin that is not a window position inside the image (only a
            // hand-made one can be) gives its pixel no gradient, on every backend.
            match[y * W + x] = known && window_offset_inside(y, x, dy, dx, H, W)
                                   ? static_cast<int32_t>((y + dy) * W + x + dx)
                                   : int32_t(-1);
          }
        }
        const scalar_t* __restrict__ grad = gd + n * H * W;
        const int32_t* __restrict__ q = match.data();
        for (int64_t c = 0; c < C; ++c) {
          const int64_t plane = (n * C + c) * H * W;
          scalar_t* gg = ggen ? ggen + plane : nullptr;
          acc_t* gt = gtgt ? gtgt + plane : nullptr;
          if (gg && gt) {
            nn_loss_backward_plane<scalar_t, acc_t, true, true>(grad, q, gen + plane, tgt + plane, gg, gt, H * W);
          } else if (gg) {
            nn_loss_backward_plane<scalar_t, acc_t, true, false>(grad, q, gen + plane, tgt + plane, gg, gt, H * W);
          } else {
            nn_loss_backward_plane<scalar_t, acc_t, false, true>(grad, q, gen + plane, tgt + plane, gg, gt, H * W);
          }
        }
      }
    });
  });
  return result();
}

}  // namespace

TORCH_LIBRARY_IMPL(deformgan_ops, CPU, m) {
  m.impl("nn_loss", &nn_loss_cpu);
  m.impl("_nn_loss_backward", &nn_loss_backward_cpu);
}

}  // namespace deformgan_ops

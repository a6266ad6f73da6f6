// CPU kernels of nn_loss: per-pixel nearest-neighbour distance and its backward.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include <limits>
#include <vector>

#include "../checks.h"
#include "../nn_loss_math.h"

namespace deformgan_ops {
namespace {

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
  AT_DISPATCH_FLOATING_TYPES(generated.scalar_type(), "nn_loss_cpu", [&] {
    using acc_t = scalar_t;
    const scalar_t* gen = generated.data_ptr<scalar_t>();
    const scalar_t* tgt = target.data_ptr<scalar_t>();
    scalar_t* dist = distance.data_ptr<scalar_t>();
    int32_t* amin = argmin.data_ptr<int32_t>();
    // One task per (n, y) row; the scratch holds k*k distances for one row only.
    at::parallel_for(0, N * H, 1, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> acc(KK * W);
      for (int64_t row = begin; row < end; ++row) {
        const int64_t n = row / H, y = row % H;
        std::fill(acc.begin(), acc.end(), acc_t(0));
        for (int32_t o = 0; o < KK; ++o) {
          int64_t dy, dx;
          window_offset(o, k, dy, dx);
          if (y + dy < 0 || y + dy >= H) continue;
          const int64_t x_lo = std::max<int64_t>(0, -dx), x_hi = std::min<int64_t>(W, W - dx);
          acc_t* a = acc.data() + o * W;
          for (int64_t c = 0; c < C; ++c) {
            const scalar_t* g = gen + ((n * C + c) * H + y) * W;
            const scalar_t* t = tgt + ((n * C + c) * H + y + dy) * W + dx;
            for (int64_t x = x_lo; x < x_hi; ++x) a[x] += abs_diff<acc_t>(t[x], g[x]);
          }
        }
        for (int64_t x = 0; x < W; ++x) {
          acc_t best = std::numeric_limits<acc_t>::infinity();
          int32_t best_o = 0;
          for (int32_t o = 0; o < KK; ++o) {
            int64_t dy, dx;
            window_offset(o, k, dy, dx);
            if (!window_offset_inside(y, x, dy, dx, H, W)) continue;
            if (acc[o * W + x] < best) {
              best = acc[o * W + x];
              best_o = o;
            }
          }
          dist[row * W + x] = static_cast<scalar_t>(best);
          amin[row * W + x] = best_o;
        }
      }
    });
  });
  return {distance, argmin};
}

std::tuple<at::Tensor, at::Tensor> nn_loss_backward_cpu(const at::Tensor& grad_distance_in,
                                                        const at::Tensor& generated_in,
                                                        const at::Tensor& target_in,
                                                        const at::Tensor& argmin_in,
                                                        int64_t kernel_size) {
  check_nn_loss_inputs(generated_in, target_in, kernel_size);
  const int64_t N = generated_in.size(0), C = generated_in.size(1), H = generated_in.size(2),
                W = generated_in.size(3);
  TORCH_CHECK(grad_distance_in.sizes() == at::IntArrayRef({N, H, W}),
              "grad_distance must have shape [N, H, W] = [", N, ", ", H, ", ", W, "], got ",
              grad_distance_in.sizes());
  TORCH_CHECK(argmin_in.sizes() == grad_distance_in.sizes() && argmin_in.scalar_type() == at::kInt,
              "argmin must be an int32 tensor of shape [N, H, W], got ", argmin_in.scalar_type(),
              " ", argmin_in.sizes());
  const at::Tensor generated = generated_in.contiguous();
  const at::Tensor target = target_in.contiguous();
  const at::Tensor grad_distance = grad_distance_in.to(generated.scalar_type()).contiguous();
  const at::Tensor argmin = argmin_in.contiguous();
  at::Tensor grad_generated = at::zeros_like(generated);
  at::Tensor grad_target = at::zeros_like(target);
  if (generated.numel() == 0) return {grad_generated, grad_target};
  const int64_t k = kernel_size;
  AT_DISPATCH_FLOATING_TYPES(generated.scalar_type(), "nn_loss_backward_cpu", [&] {
    using acc_t = scalar_t;
    const scalar_t* gen = generated.data_ptr<scalar_t>();
    const scalar_t* tgt = target.data_ptr<scalar_t>();
    const scalar_t* gd = grad_distance.data_ptr<scalar_t>();
    const int32_t* amin = argmin.data_ptr<int32_t>();
    scalar_t* ggen = grad_generated.data_ptr<scalar_t>();
    scalar_t* gtgt = grad_target.data_ptr<scalar_t>();
    // Parallel over the batch: each task owns grad_target[n] (the scattered one).
    at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
      for (int64_t n = begin; n < end; ++n) {
        for (int64_t c = 0; c < C; ++c) {
          const scalar_t* g = gen + (n * C + c) * H * W;
          const scalar_t* t = tgt + (n * C + c) * H * W;
          scalar_t* gg = ggen + (n * C + c) * H * W;
          scalar_t* gt = gtgt + (n * C + c) * H * W;
          for (int64_t y = 0; y < H; ++y) {
            for (int64_t x = 0; x < W; ++x) {
              const int64_t p = y * W + x;
              const acc_t grad = static_cast<acc_t>(gd[n * H * W + p]);
              if (grad == acc_t(0)) continue;
              int64_t dy, dx;
              const int32_t o = amin[n * H * W + p];
              window_offset(o, k, dy, dx);
              TORCH_CHECK(o >= 0 && o < k * k && window_offset_inside(y, x, dy, dx, H, W),
                          "argmin holds window index ", o, " at pixel (", x, ", ", y,
                          "), which is not a window position inside the image");
              const int64_t q = (y + dy) * W + x + dx;
              const acc_t s = abs_diff_grad_generated<acc_t>(t[q], g[p]);
              gg[p] += static_cast<scalar_t>(grad * s);
              gt[q] -= static_cast<scalar_t>(grad * s);
            }
          }
        }
      }
    });
  });
  return {grad_generated, grad_target};
}

}  // namespace

TORCH_LIBRARY_IMPL(deformgan_ops, CPU, m) {
  m.impl("nn_loss", &nn_loss_cpu);
  m.impl("_nn_loss_backward", &nn_loss_backward_cpu);
}

}  // namespace deformgan_ops

// CUDA kernels of nn_loss: per-pixel nearest-neighbour distance and its backward.
// The per-element math is in ../nn_loss_math.h, shared with the CPU kernels.
#include <ATen/Dispatch.h>
#include <ATen/cuda/Atomic.cuh>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <array>
#include <limits>
#include <type_traits>

#include "../checks.h"
#include "../nn_loss_math.h"
#include "cuda_utils.cuh"

namespace deformgan_ops {
namespace {

// One thread per pixel (n, y, x): the window in row-major order, the channel sum per
// window position, the first strict minimum. No k*k copies. For a window size K known
// at compile time (the sizes in use: 1, 3, 5, 7) the channels run outer and the K*K
// running sums stay in registers, so generated is read once per pixel instead of K*K
// times; K = 0 takes the size k at run time and sums one window position at a time.
// Either way each position's sum runs over the channels in the same order, so the
// results are identical.
template <typename scalar_t, typename acc_t, int K>
__global__ void nn_loss_forward_kernel(const scalar_t* __restrict__ gen,
                                       const scalar_t* __restrict__ tgt,
                                       scalar_t* __restrict__ dist, int32_t* __restrict__ argmin,
                                       int64_t N, int64_t C, int64_t H, int64_t W, int64_t k) {
  const int64_t total = N * H * W;
  const int64_t HW = H * W;
  DEFORMGAN_GRID_STRIDE_LOOP(i, total) {
    const int64_t x = i % W;
    const int64_t y = (i / W) % H;
    const int64_t n = i / HW;
    const scalar_t* g = gen + n * C * HW + y * W + x;
    const scalar_t* t0 = tgt + n * C * HW;
    acc_t best = std::numeric_limits<acc_t>::infinity();
    int32_t best_o = -1;  // set by the first window position inside the image
    if constexpr (K > 0) {
      acc_t d[K * K];
      bool in[K * K];
DEFORMGAN_UNROLL
      for (int32_t o = 0; o < K * K; ++o) {
        int64_t dy, dx;
        window_offset(o, K, dy, dx);
        in[o] = window_offset_inside(y, x, dy, dx, H, W);
        d[o] = acc_t(0);
      }
      // A pixel whose whole window lies inside the image (nearly all of them) sums
      // with no border predicate in the channel loop; the others test each position.
      constexpr int64_t r = K / 2;
      const bool interior = x >= r && x < W - r && y >= r && y < H - r;
      const scalar_t* tp = t0 + y * W + x;
      if (interior) {
        for (int64_t c = 0; c < C; ++c) {
          const acc_t gv = static_cast<acc_t>(g[c * HW]);
          const scalar_t* tc = tp + c * HW;
DEFORMGAN_UNROLL
          for (int32_t o = 0; o < K * K; ++o) {
            d[o] += abs_diff<acc_t>(static_cast<acc_t>(tc[(o / K - r) * W + (o % K - r)]), gv);
          }
        }
      } else {
        for (int64_t c = 0; c < C; ++c) {
          const acc_t gv = static_cast<acc_t>(g[c * HW]);
          const scalar_t* tc = tp + c * HW;
DEFORMGAN_UNROLL
          for (int32_t o = 0; o < K * K; ++o) {
            if (in[o]) d[o] += abs_diff<acc_t>(static_cast<acc_t>(tc[(o / K - r) * W + (o % K - r)]), gv);
          }
        }
      }
DEFORMGAN_UNROLL
      for (int32_t o = 0; o < K * K; ++o) {
        if (in[o] && nn_candidate_wins(d[o], best, best_o >= 0)) {
          best = d[o];
          best_o = o;
        }
      }
    } else {
      for (int32_t o = 0; o < k * k; ++o) {
        int64_t dy, dx;
        window_offset(o, k, dy, dx);
        if (!window_offset_inside(y, x, dy, dx, H, W)) continue;
        const scalar_t* t = t0 + (y + dy) * W + x + dx;
        acc_t d = 0;
        for (int64_t c = 0; c < C; ++c) {
          d += abs_diff<acc_t>(static_cast<acc_t>(t[c * HW]), static_cast<acc_t>(g[c * HW]));
        }
        if (nn_candidate_wins(d, best, best_o >= 0)) {
          best = d;
          best_o = o;
        }
      }
    }
    dist[i] = static_cast<scalar_t>(best);
    argmin[i] = best_o;
  }
}

// One thread per pixel p: the gradient reaches generated at p (owned) and
// target at the winning q (atomics: several pixels may pick the same q).
template <typename scalar_t, typename acc_t>
__global__ void nn_loss_backward_kernel(const scalar_t* __restrict__ grad,
                                        const scalar_t* __restrict__ gen,
                                        const scalar_t* __restrict__ tgt,
                                        const int32_t* __restrict__ argmin,
                                        scalar_t* __restrict__ ggen, acc_t* __restrict__ gtgt,
                                        int64_t N, int64_t C, int64_t H, int64_t W, int64_t k) {
  const int64_t total = N * H * W;
  const int64_t HW = H * W;
  DEFORMGAN_GRID_STRIDE_LOOP(i, total) {
    const int64_t x = i % W;
    const int64_t y = (i / W) % H;
    const int64_t n = i / HW;
    const int32_t o = argmin[i];
    int64_t dy, dx;
    window_offset(o, k, dy, dx);
    const bool valid = o >= 0 && o < k * k && window_offset_inside(y, x, dy, dx, H, W);
    const int64_t p = y * W + x;
    const int64_t q = (y + dy) * W + x + dx;
    if (!valid) {  // not a window position inside the image: no gradient, nothing read
      if (ggen != nullptr) {
        for (int64_t c = 0; c < C; ++c) ggen[(n * C + c) * HW + p] = scalar_t(0);
      }
      continue;
    }
    const acc_t gd = static_cast<acc_t>(grad[i]);
    for (int64_t c = 0; c < C; ++c) {
      const int64_t base = (n * C + c) * HW;
      const acc_t v = gd * abs_diff_grad_generated<acc_t>(static_cast<acc_t>(tgt[base + q]),
                                                          static_cast<acc_t>(gen[base + p]));
      if (ggen != nullptr) ggen[base + p] = static_cast<scalar_t>(v);
      if (gtgt != nullptr && v != acc_t(0)) gpuAtomicAdd(gtgt + base + q, -v);
    }
  }
}

std::tuple<at::Tensor, at::Tensor> nn_loss_cuda(const at::Tensor& generated_in,
                                                const at::Tensor& target_in, int64_t kernel_size) {
  check_nn_loss_inputs(generated_in, target_in, kernel_size);
  TORCH_CHECK(generated_in.is_cuda(), "generated must be a CUDA tensor for the cuda kernel");
  c10::cuda::CUDAGuard guard(generated_in.device());
  const at::Tensor generated = generated_in.contiguous();
  const at::Tensor target = target_in.contiguous();
  const int64_t N = generated.size(0), C = generated.size(1), H = generated.size(2),
                W = generated.size(3);
  at::Tensor distance = at::empty({N, H, W}, generated.options());
  at::Tensor argmin = at::empty({N, H, W}, generated.options().dtype(at::kInt));
  if (distance.numel() == 0) return {distance, argmin};
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, generated.scalar_type(), "nn_loss_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto blocks = blocks_for(distance.numel());
    const scalar_t* g = generated.data_ptr<scalar_t>();
    const scalar_t* t = target.data_ptr<scalar_t>();
    scalar_t* d = distance.data_ptr<scalar_t>();
    int32_t* a = argmin.data_ptr<int32_t>();
    const auto launch = [&](auto window) {
      constexpr int K = decltype(window)::value;
      nn_loss_forward_kernel<scalar_t, acc_t, K><<<blocks, kThreads, 0, stream>>>(g, t, d, a, N, C, H, W,
                                                                                 kernel_size);
    };
    switch (kernel_size) {
      case 1: launch(std::integral_constant<int, 1>{}); break;
      case 3: launch(std::integral_constant<int, 3>{}); break;
      case 5: launch(std::integral_constant<int, 5>{}); break;
      case 7: launch(std::integral_constant<int, 7>{}); break;
      default: launch(std::integral_constant<int, 0>{});
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {distance, argmin};
}

std::tuple<at::Tensor, at::Tensor> nn_loss_backward_cuda(const at::Tensor& grad_distance_in,
                                                         const at::Tensor& generated_in,
                                                         const at::Tensor& target_in,
                                                         const at::Tensor& argmin_in,
                                                         int64_t kernel_size,
                                                         std::array<bool, 2> output_mask) {
  check_nn_loss_backward_inputs(grad_distance_in, generated_in, target_in, argmin_in, kernel_size);
  c10::cuda::CUDAGuard guard(generated_in.device());
  const int64_t N = generated_in.size(0), C = generated_in.size(1), H = generated_in.size(2),
                W = generated_in.size(3);
  const bool need_generated = output_mask[0], need_target = output_mask[1];
  if (need_target) {
    at::globalContext().alertNotDeterministic("deformgan_ops::_nn_loss_backward (CUDA, grad of target)");
  }
  const at::Tensor generated = generated_in.contiguous();
  const at::Tensor target = target_in.contiguous();
  const at::Tensor grad_distance = grad_distance_in.to(generated.scalar_type()).contiguous();
  const at::Tensor argmin = argmin_in.contiguous();
  const auto none = [&] { return at::empty({0}, generated.options()); };
  at::Tensor grad_generated = need_generated ? at::empty(generated.sizes(), generated.options()) : none();
  at::Tensor gtgt = need_target
                        ? at::zeros(generated.sizes(), generated.options().dtype(
                                                           at::toOpMathType(generated.scalar_type())))
                        : at::Tensor();
  if (generated.numel() > 0 && (need_generated || need_target)) {
    auto stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, generated.scalar_type(),
                                    "nn_loss_backward_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      nn_loss_backward_kernel<scalar_t, acc_t><<<blocks_for(N * H * W), kThreads, 0, stream>>>(
          grad_distance.data_ptr<scalar_t>(), generated.data_ptr<scalar_t>(),
          target.data_ptr<scalar_t>(), argmin.data_ptr<int32_t>(),
          need_generated ? grad_generated.data_ptr<scalar_t>() : nullptr,
          need_target ? gtgt.data_ptr<acc_t>() : nullptr, N, C, H, W, kernel_size);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return {grad_generated, need_target ? gtgt.to(generated.scalar_type()) : none()};
}

}  // namespace

TORCH_LIBRARY_IMPL(deformgan_ops, CUDA, m) {
  m.impl("nn_loss", &nn_loss_cuda);
  m.impl("_nn_loss_backward", &nn_loss_backward_cuda);
}

}  // namespace deformgan_ops

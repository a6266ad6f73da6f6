// CPU kernels of the pose geometry: part_masks (and its out= form) and
// part_affines. The per-pose math is in ../pose_geometry_math.h, shared with the
// CUDA kernels.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>

#include "../checks.h"
#include "../pose_geometry_math.h"
#include "cpu_utils.h"

namespace deformgan_ops {
namespace {

using pose::kNumJoints;
using pose::kNumParts;

// One row of a quad's mask: ones on the columns in [lo, hi], zeros elsewhere.
// x >= lo and x <= hi for integer x are x >= ceil(lo) and x <= floor(hi).
template <typename scalar_t>
void fill_row_interval(scalar_t* row, int64_t width, double lo, double hi) {
  const double first = std::ceil(lo), last = std::floor(hi);
  int64_t x0 = width, x1 = -1;  // empty unless the interval meets [0, width - 1]
  if (first <= last && first <= static_cast<double>(width - 1) && last >= 0.0) {
    x0 = first < 0.0 ? 0 : static_cast<int64_t>(first);
    x1 = last > static_cast<double>(width - 1) ? width - 1 : static_cast<int64_t>(last);
  }
  if (x1 < x0) {
    std::fill(row, row + width, scalar_t(0));
    return;
  }
  std::fill(row, row + x0, scalar_t(0));
  std::fill(row + x0, row + x1 + 1, scalar_t(1));
  std::fill(row + x1 + 1, row + width, scalar_t(0));
}

void part_masks_cpu_impl(const at::Tensor& keypoints_in, double scale,
                         const c10::optional<at::Tensor>& enabled_in, at::Tensor& output) {
  TORCH_CHECK(keypoints_in.device().is_cpu(), "keypoints must be a CPU tensor for the cpu kernel");
  if (output.numel() == 0) return;
  const at::Tensor keypoints = keypoints_in.contiguous();
  const bool has_enabled = enabled_in.has_value() && enabled_in->defined();
  const at::Tensor enabled = has_enabled ? enabled_in->contiguous() : at::Tensor();
  const bool* on = has_enabled ? enabled.data_ptr<bool>() : nullptr;
  const int64_t N = keypoints.size(0), height = output.size(2), width = output.size(3);
  AT_DISPATCH_FLOATING_TYPES(keypoints.scalar_type(), "part_masks_cpu", [&] {
    const scalar_t* kp = keypoints.data_ptr<scalar_t>();
    scalar_t* out = output.data_ptr<scalar_t>();
    const scalar_t s = static_cast<scalar_t>(scale);
    // one task per (pose, part): its shape once, then every row
    at::parallel_for(0, N * kNumParts, 1, [&](int64_t begin, int64_t end) {
      for (int64_t j = begin; j < end; ++j) {
        const int64_t n = j / kNumParts;
        const int part = static_cast<int>(j % kNumParts);
        const bool part_on = on == nullptr || on[j];
        const auto shape = pose::make_mask_shape<scalar_t>(kp + n * kNumJoints * 2, part, s, part_on);
        scalar_t* plane = out + j * height * width;
        if (shape.kind <= 1) {
          std::fill(plane, plane + height * width, scalar_t(shape.kind));
          continue;
        }
        for (int64_t y = 0; y < height; ++y) {
          scalar_t* row = plane + y * width;
          const auto r = pose::mask_row(shape, y);
          if (shape.kind == 3) {
            fill_row_interval(row, width, r.any ? r.lo : INFINITY, r.hi);
          } else {
            for (int64_t x = 0; x < width; ++x) row[x] = scalar_t(pose::mask_inside(shape, r, x));
          }
        }
      }
    });
  });
}

std::tuple<at::Tensor, at::Tensor> part_affines_cpu(const at::Tensor& source_in,
                                                    const at::Tensor& target_in) {
  check_part_affines_inputs(source_in, target_in);
  TORCH_CHECK(source_in.device().is_cpu(), "source_keypoints must be a CPU tensor for the cpu kernel");
  const at::Tensor source = source_in.contiguous(), target = target_in.contiguous();
  const int64_t N = source.size(0);
  at::Tensor theta = at::empty({N, kNumParts, 2, 3}, source.options());
  at::Tensor valid = at::empty({N, kNumParts}, source.options().dtype(at::kBool));
  if (N == 0) return {theta, valid};
  AT_DISPATCH_FLOATING_TYPES(source.scalar_type(), "part_affines_cpu", [&] {
    const scalar_t* src = source.data_ptr<scalar_t>();
    const scalar_t* tgt = target.data_ptr<scalar_t>();
    scalar_t* th = theta.data_ptr<scalar_t>();
    bool* ok = valid.data_ptr<bool>();
    // One task per (pair, part), as the CUDA kernel's threads.
    at::parallel_for(0, N * kNumParts, 1, [&](int64_t begin, int64_t end) {
      double fit[6];
      for (int64_t i = begin; i < end; ++i) {
        const int64_t n = i / kNumParts;
        ok[i] = pose::part_affine_of_pair(src + n * kNumJoints * 2, tgt + n * kNumJoints * 2,
                                          static_cast<int>(i % kNumParts), fit);
        for (int k = 0; k < 6; ++k) th[i * 6 + k] = static_cast<scalar_t>(fit[k]);
      }
    });
  });
  return {theta, valid};
}

}  // namespace

TORCH_LIBRARY_IMPL(deformgan_ops, CPU, m) {
  m.impl("part_masks", &part_masks_entry<part_masks_cpu_impl>);
  m.impl("part_masks.out", &part_masks_out_entry<part_masks_cpu_impl>);
  m.impl("part_affines", &part_affines_cpu);
}

}  // namespace deformgan_ops

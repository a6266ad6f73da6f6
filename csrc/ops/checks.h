// Input validation shared by every device's kernels (TORCH_CHECK messages name
// the argument, what was expected and what was given).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace deformgan_ops {

inline void check_dim(const at::Tensor& t, const char* name, int64_t dim, const char* layout) {
  TORCH_CHECK(t.dim() == dim, name, " must be a ", dim, "-D tensor ", layout, ", got shape ",
              t.sizes());
}

inline void check_same_device_dtype(const at::Tensor& t, const char* name,
                                    const at::Tensor& ref, const char* ref_name) {
  TORCH_CHECK(t.device() == ref.device(), name, " must be on the same device as ", ref_name,
              " (", ref.device(), "), got ", t.device());
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), name, " must have the dtype of ", ref_name,
              " (", ref.scalar_type(), "), got ", t.scalar_type());
}

inline void check_part_affine_warp_inputs(const at::Tensor& features, const at::Tensor& theta,
                                          const at::Tensor& masks,
                                          const c10::optional<at::Tensor>& offsets) {
  check_dim(features, "features", 4, "[N, C, H, W]");
  check_dim(theta, "theta", 4, "[N, P, 2, 3]");
  check_dim(masks, "masks", 4, "[N, P, Ho, Wo]");
  TORCH_CHECK(at::isFloatingType(features.scalar_type()),
              "features must be a floating point tensor, got ", features.scalar_type());
  check_same_device_dtype(theta, "theta", features, "features");
  check_same_device_dtype(masks, "masks", features, "features");
  const int64_t N = features.size(0);
  TORCH_CHECK(theta.size(0) == N && theta.size(2) == 2 && theta.size(3) == 3,
              "theta must have shape [N, P, 2, 3] with N = ", N, ", got ", theta.sizes());
  TORCH_CHECK(masks.size(0) == N && masks.size(1) == theta.size(1),
              "masks must have shape [N, P, Ho, Wo] with N = ", N, " and P = ", theta.size(1),
              ", got ", masks.sizes());
  TORCH_CHECK(theta.size(1) >= 1 && theta.size(1) <= 255,
              "theta must have between 1 and 255 parts, got P = ", theta.size(1));
  if (offsets.has_value() && offsets->defined()) {
    check_dim(*offsets, "offsets", 4, "[N, 2, Ho, Wo]");
    check_same_device_dtype(*offsets, "offsets", features, "features");
    TORCH_CHECK(offsets->size(0) == N && offsets->size(1) == 2 &&
                    offsets->size(2) == masks.size(2) && offsets->size(3) == masks.size(3),
                "offsets must have shape [N, 2, Ho, Wo] = [", N, ", 2, ", masks.size(2), ", ",
                masks.size(3), "], got ", offsets->sizes());
  }
}

inline void check_keypoint_heatmaps_inputs(const at::Tensor& keypoints, int64_t height,
                                           int64_t width, double sigma) {
  check_dim(keypoints, "keypoints", 3, "[N, K, 2]");
  TORCH_CHECK(keypoints.size(2) == 2, "keypoints must have shape [N, K, 2] (x, y), got ",
              keypoints.sizes());
  TORCH_CHECK(at::isFloatingType(keypoints.scalar_type()),
              "keypoints must be a floating point tensor, got ", keypoints.scalar_type());
  TORCH_CHECK(height >= 1 && width >= 1, "height and width must be positive, got height = ",
              height, ", width = ", width);
  TORCH_CHECK(sigma > 0 && std::isfinite(sigma), "sigma must be a positive finite number, got ",
              sigma);
}

inline void check_nn_loss_inputs(const at::Tensor& generated, const at::Tensor& target,
                                 int64_t kernel_size) {
  check_dim(generated, "generated", 4, "[N, C, H, W]");
  TORCH_CHECK(at::isFloatingType(generated.scalar_type()),
              "generated must be a floating point tensor, got ", generated.scalar_type());
  check_same_device_dtype(target, "target", generated, "generated");
  TORCH_CHECK(target.sizes() == generated.sizes(),
              "target must have the shape of generated ", generated.sizes(), ", got ",
              target.sizes());
  TORCH_CHECK(kernel_size >= 1 && kernel_size % 2 == 1,
              "kernel_size must be an odd positive integer, got ", kernel_size);
}

}  // namespace deformgan_ops

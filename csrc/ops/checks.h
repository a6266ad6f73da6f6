// Input validation shared by every device's kernels (TORCH_CHECK messages name
// the argument, what was expected and what was given), and the entry points.
#pragma once

#include <algorithm>

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
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

// theta, masks and offsets of part_affine_warp: on the device of features, with its
// dtype, or float32 when features are float16/bfloat16 (the kernels compute the
// sampling locations and the candidates in float32 either way).
inline void check_warp_companion(const at::Tensor& t, const char* name, const at::Tensor& features) {
  TORCH_CHECK(t.device() == features.device(), name, " must be on the same device as features (",
              features.device(), "), got ", t.device());
  const bool low = features.scalar_type() == at::kHalf || features.scalar_type() == at::kBFloat16;
  TORCH_CHECK(t.scalar_type() == features.scalar_type() || (low && t.scalar_type() == at::kFloat), name,
              " must have the dtype of features (", features.scalar_type(), low ? ") or float32" : ")",
              ", got ", t.scalar_type());
}

// The memory format of part_affine_warp's output, winners and feature gradient:
// channels-last when the features are (and not also plain contiguous, as with C = 1
// or H * W = 1), else contiguous; every backend and the fake kernels follow it.
inline at::MemoryFormat warp_layout(const at::Tensor& features) {
  return features.dim() == 4 && !features.is_contiguous() &&
                 features.is_contiguous(at::MemoryFormat::ChannelsLast)
             ? at::MemoryFormat::ChannelsLast
             : at::MemoryFormat::Contiguous;
}

inline void check_part_affine_warp_inputs(const at::Tensor& features, const at::Tensor& theta,
                                          const at::Tensor& masks,
                                          const c10::optional<at::Tensor>& offsets) {
  check_dim(features, "features", 4, "[N, C, H, W]");
  check_dim(theta, "theta", 4, "[N, P, 2, 3]");
  check_dim(masks, "masks", 4, "[N, P, Ho, Wo]");
  TORCH_CHECK(at::isFloatingType(features.scalar_type()),
              "features must be a floating point tensor, got ", features.scalar_type());
  check_warp_companion(theta, "theta", features);
  check_warp_companion(masks, "masks", features);
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
    check_warp_companion(*offsets, "offsets", features);
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
  // A window wider than 2 max(H, W) - 1 adds no position inside the image, only
  // scratch (k^2 per pixel of a row): deformgan_ops.nn_loss clips it to that.
  const int64_t longest = std::max<int64_t>(generated.size(2), generated.size(3));
  TORCH_CHECK(kernel_size <= std::max<int64_t>(1, 2 * longest - 1),
              "kernel_size must be at most 2 * max(H, W) - 1 = ", std::max<int64_t>(1, 2 * longest - 1),
              " for generated of shape ", generated.sizes(), ", got ", kernel_size,
              " (deformgan_ops.nn_loss clips a larger window to the image)");
  TORCH_CHECK(generated.size(2) * generated.size(3) < (int64_t(1) << 31),
              "generated must have fewer than 2^31 pixels per plane, got ", generated.size(2), " x ",
              generated.size(3));
}

inline void check_part_affine_warp_backward_inputs(const at::Tensor& grad_output, const at::Tensor& features,
                                                   const at::Tensor& theta, const at::Tensor& masks,
                                                   const c10::optional<at::Tensor>& offsets,
                                                   const at::Tensor& winner) {
  check_part_affine_warp_inputs(features, theta, masks, offsets);
  const int64_t N = features.size(0), C = features.size(1), Ho = masks.size(2), Wo = masks.size(3);
  TORCH_CHECK(grad_output.sizes() == at::IntArrayRef({N, C, Ho, Wo}),
              "grad_output must have shape [N, C, Ho, Wo] = [", N, ", ", C, ", ", Ho, ", ", Wo, "], got ",
              grad_output.sizes());
  TORCH_CHECK(winner.sizes() == grad_output.sizes() && winner.scalar_type() == at::kByte,
              "winner must be a uint8 tensor of shape ", grad_output.sizes(), ", got ", winner.scalar_type(), " ",
              winner.sizes());
}

inline void check_keypoint_heatmaps_backward_inputs(const at::Tensor& grad_output, const at::Tensor& keypoints,
                                                    int64_t height, int64_t width, double sigma) {
  check_keypoint_heatmaps_inputs(keypoints, height, width, sigma);
  const int64_t N = keypoints.size(0), K = keypoints.size(1);
  TORCH_CHECK(grad_output.sizes() == at::IntArrayRef({N, K, height, width}),
              "grad_output must have shape [N, K, height, width] = [", N, ", ", K, ", ", height, ", ", width,
              "], got ", grad_output.sizes());
}

inline void check_nn_loss_backward_inputs(const at::Tensor& grad_distance, const at::Tensor& generated,
                                          const at::Tensor& target, const at::Tensor& argmin,
                                          int64_t kernel_size) {
  check_nn_loss_inputs(generated, target, kernel_size);
  const int64_t N = generated.size(0), H = generated.size(2), W = generated.size(3);
  TORCH_CHECK(grad_distance.sizes() == at::IntArrayRef({N, H, W}), "grad_distance must have shape [N, H, W] = [",
              N, ", ", H, ", ", W, "], got ", grad_distance.sizes());
  TORCH_CHECK(argmin.sizes() == grad_distance.sizes() && argmin.scalar_type() == at::kInt,
              "argmin must be an int32 tensor of shape [N, H, W], got ", argmin.scalar_type(), " ", argmin.sizes());
}

inline void check_pose_keypoints(const at::Tensor& kp, const char* name) {
  check_dim(kp, name, 3, "[N, 18, 2]");
  TORCH_CHECK(kp.size(1) == 18 && kp.size(2) == 2, name, " must have shape [N, 18, 2] (x, y), got ",
              kp.sizes());
  TORCH_CHECK(kp.scalar_type() == at::kFloat || kp.scalar_type() == at::kDouble, name,
              " must be float32 or float64 for the compiled kernels, got ", kp.scalar_type());
}

inline void check_part_masks_inputs(const at::Tensor& keypoints, int64_t height, int64_t width,
                                    double scale, const c10::optional<at::Tensor>& enabled) {
  check_pose_keypoints(keypoints, "keypoints");
  TORCH_CHECK(height >= 1 && width >= 1, "height and width must be positive, got height = ", height,
              ", width = ", width);
  TORCH_CHECK(scale > 0 && std::isfinite(scale), "scale must be a positive finite number, got ", scale);
  if (enabled.has_value() && enabled->defined()) {
    TORCH_CHECK(enabled->scalar_type() == at::kBool, "enabled must be a bool tensor, got ",
                enabled->scalar_type());
    TORCH_CHECK(enabled->sizes() == at::IntArrayRef({keypoints.size(0), 10}),
                "enabled must have shape [N, 10] = [", keypoints.size(0), ", 10], got ", enabled->sizes());
    TORCH_CHECK(enabled->device() == keypoints.device(), "enabled must be on the device of keypoints (",
                keypoints.device(), "), got ", enabled->device());
  }
}

inline void check_part_affines_inputs(const at::Tensor& source, const at::Tensor& target) {
  check_pose_keypoints(source, "source_keypoints");
  check_pose_keypoints(target, "target_keypoints");
  check_same_device_dtype(target, "target_keypoints", source, "source_keypoints");
  TORCH_CHECK(target.size(0) == source.size(0), "target_keypoints must have the shape of source_keypoints ",
              source.sizes(), ", got ", target.sizes());
}

// An out= tensor: exactly the expected shape, the dtype and device of ref, contiguous.
inline void check_out(const at::Tensor& out, at::IntArrayRef sizes, const at::Tensor& ref,
                      const char* ref_name) {
  TORCH_CHECK(out.sizes() == sizes, "out must have shape ", sizes, ", got ", out.sizes());
  check_same_device_dtype(out, "out", ref, ref_name);
  TORCH_CHECK(out.is_contiguous(), "out must be contiguous");
}

// The functional and out= entry points of the ops whose device kernels fill a
// given output tensor: both check the inputs, the functional form allocates the
// output, the out= form checks the caller's. Each device file instantiates them
// with its kernel (Impl), so the CPU and CUDA files hold only their kernels.

using HeatmapsImpl = void (*)(const at::Tensor& keypoints, double sigma, at::Tensor& output);
using PartMasksImpl = void (*)(const at::Tensor& keypoints, double scale,
                               const c10::optional<at::Tensor>& enabled, at::Tensor& output);

template <HeatmapsImpl Impl>
at::Tensor keypoint_heatmaps_entry(const at::Tensor& keypoints, int64_t height, int64_t width,
                                   double sigma) {
  check_keypoint_heatmaps_inputs(keypoints, height, width, sigma);
  at::Tensor output =
      at::empty({keypoints.size(0), keypoints.size(1), height, width}, keypoints.options());
  Impl(keypoints, sigma, output);
  return output;
}

template <HeatmapsImpl Impl>
void keypoint_heatmaps_out_entry(const at::Tensor& keypoints, int64_t height, int64_t width,
                                 double sigma, at::Tensor& out) {
  check_keypoint_heatmaps_inputs(keypoints, height, width, sigma);
  check_out(out, {keypoints.size(0), keypoints.size(1), height, width}, keypoints, "keypoints");
  Impl(keypoints, sigma, out);
}

template <PartMasksImpl Impl>
at::Tensor part_masks_entry(const at::Tensor& keypoints, int64_t height, int64_t width, double scale,
                            const c10::optional<at::Tensor>& enabled) {
  check_part_masks_inputs(keypoints, height, width, scale, enabled);
  at::Tensor output = at::empty({keypoints.size(0), 10, height, width}, keypoints.options());
  Impl(keypoints, scale, enabled, output);
  return output;
}

template <PartMasksImpl Impl>
void part_masks_out_entry(const at::Tensor& keypoints, int64_t height, int64_t width, double scale,
                          const c10::optional<at::Tensor>& enabled, at::Tensor& out) {
  check_part_masks_inputs(keypoints, height, width, scale, enabled);
  check_out(out, {keypoints.size(0), 10, height, width}, keypoints, "keypoints");
  Impl(keypoints, scale, enabled, out);
}

}  // namespace deformgan_ops

// The functional and out= entry points of the ops whose device kernels fill a
// given output tensor: both check the inputs, the functional form allocates the
// output, the out= form checks the caller's. Each device file instantiates them
// with its kernel (Impl), so the CPU and CUDA files hold only their kernels.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include "checks.h"

namespace deformgan_ops {

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

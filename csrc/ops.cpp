// The one place where the operator schemas live. Device kernels register
// themselves in TORCH_LIBRARY_IMPL blocks in ops/cpu/*.cpp and ops/cuda/*.cu;
// fake kernels and autograd are registered from Python (deformgan_ops/ops/<name>.py).
#include <Python.h>
#include <torch/library.h>

extern "C" {
// Importing deformgan_ops._C loads this library and with it the registrations
// below; the module itself has no Python functions.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", "DeformGAN compiled operators", -1, nullptr,
  };
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(deformgan_ops, m) {
  // Returns (output [N, C, Ho, Wo], winner [N, C, Ho, Wo] uint8: the winning part).
  m.def(
      "part_affine_warp(Tensor features, Tensor theta, Tensor masks, Tensor? offsets) "
      "-> (Tensor, Tensor)");
  // Returns (grad_features, grad_theta, grad_masks, grad_offsets); a gradient
  // whose output_mask entry is false (or grad_offsets when offsets is None) is
  // returned as an empty tensor and not computed.
  m.def(
      "_part_affine_warp_backward(Tensor grad_output, Tensor features, Tensor theta, "
      "Tensor masks, Tensor? offsets, Tensor winner, bool[4] output_mask) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "keypoint_heatmaps(Tensor keypoints, int height, int width, float sigma) -> Tensor");
  // Writes into out ([N, K, height, width], contiguous, the dtype of keypoints); returns
  // nothing (torch.compile functionalises mutating custom ops only without aliased outputs).
  m.def(
      "keypoint_heatmaps.out(Tensor keypoints, int height, int width, float sigma, *, "
      "Tensor(a!) out) -> ()");
  m.def(
      "_keypoint_heatmaps_backward(Tensor grad_output, Tensor keypoints, int height, "
      "int width, float sigma) -> Tensor");
  // Returns (distance [N, H, W], argmin [N, H, W] int32: row-major window index).
  m.def("nn_loss(Tensor generated, Tensor target, int kernel_size) -> (Tensor, Tensor)");
  // Returns (grad_generated, grad_target); one whose output_mask entry is false
  // is returned as an empty tensor and not computed.
  m.def(
      "_nn_loss_backward(Tensor grad_distance, Tensor generated, Tensor target, "
      "Tensor argmin, int kernel_size, bool[2] output_mask) -> (Tensor, Tensor)");
  // Pose geometry (not differentiable). part_masks -> [N, 10, height, width] in
  // the dtype of keypoints; enabled [N, 10] bool zeroes parts that are off.
  m.def(
      "part_masks(Tensor keypoints, int height, int width, float scale, Tensor? enabled) "
      "-> Tensor");
  m.def(
      "part_masks.out(Tensor keypoints, int height, int width, float scale, Tensor? enabled, *, "
      "Tensor(a!) out) -> ()");
  // Returns (theta [N, 10, 2, 3] target -> source, valid [N, 10] bool).
  m.def("part_affines(Tensor source_keypoints, Tensor target_keypoints) -> (Tensor, Tensor)");
}

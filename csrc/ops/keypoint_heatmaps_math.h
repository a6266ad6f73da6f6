// Per-element math of keypoint_heatmaps (docs/method.md: pose rendering, the operators).
//   h[y, x] = exp(-((x - xj)^2 + (y - yj)^2) / (2 sigma^2))
// computed as the product of two 1-D Gaussians (the same number up to
// rounding); a joint with a negative or non-finite coordinate is missing and
// gives an all-zero channel with a zero gradient.
#pragma once

#include "common.h"

namespace deformgan_ops {

template <typename acc_t>
DEFORMGAN_HD bool keypoint_missing(acc_t kx, acc_t ky) {
  return !(is_finite_value(kx) && is_finite_value(ky) && kx >= acc_t(0) && ky >= acc_t(0));
}

// exp(-d^2 / (2 sigma^2)) with inv_two_sigma2 = 1 / (2 sigma^2).
template <typename acc_t>
DEFORMGAN_HD acc_t gaussian_1d(acc_t d, acc_t inv_two_sigma2) {
  return ::exp(-d * d * inv_two_sigma2);
}

// d h / d xj = h * (x - xj) / sigma^2 (and the same for y).
template <typename acc_t>
DEFORMGAN_HD acc_t gaussian_1d_slope(acc_t d, acc_t g, acc_t inv_two_sigma2) {
  return g * d * acc_t(2) * inv_two_sigma2;
}

}  // namespace deformgan_ops

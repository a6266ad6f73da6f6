// Per-element math of nn_loss (docs/method.md: the operators).
//   d[n, y, x] = min over q in the k x k window centred on p=(x, y), clipped to
//                the image, of sum_c |target[n, c, q] - generated[n, c, p]|
// The window is walked in row-major order, offset index o = (dy + r) * k + (dx + r)
// with r = k / 2; ties keep the first index; a NaN distance wins (the first NaN
// in window order), so a NaN in either input reaches the loss.
#pragma once

#include "common.h"

namespace deformgan_ops {

DEFORMGAN_HD bool window_offset_inside(int64_t y, int64_t x, int64_t dy, int64_t dx,
                                       int64_t H, int64_t W) {
  return y + dy >= 0 && y + dy < H && x + dx >= 0 && x + dx < W;
}

DEFORMGAN_HD void window_offset(int32_t o, int64_t k, int64_t& dy, int64_t& dx) {
  const int64_t r = k / 2;
  dy = o / k - r;
  dx = o % k - r;
}

// Running minimum over the window: the first position inside the image starts
// it (have == false), a later one replaces it when strictly smaller, and a NaN
// replaces any number and is then kept (torch.argmin's rule, the reference's).
template <typename acc_t>
DEFORMGAN_HD bool nn_candidate_wins(acc_t d, acc_t best, bool have) {
  return !have || d < best || (d != d && best == best);
}

template <typename acc_t>
DEFORMGAN_HD acc_t abs_diff(acc_t t, acc_t g) {
  const acc_t d = t - g;
  return d < acc_t(0) ? -d : d;
}

// Gradient of |t - g| with respect to g (the generated pixel); the target gets
// the negative. sign(0) = 0, like autograd's abs.
template <typename acc_t>
DEFORMGAN_HD acc_t abs_diff_grad_generated(acc_t t, acc_t g) {
  return sign_of(g - t);
}

}  // namespace deformgan_ops

// Per-element math of part_affine_warp (docs/method.md: the operators).
//
// For an output pixel (x, y) and a part with affine theta (2x3, target ->
// source, pixel-index coordinates) the sampling location is
//   u = t00 x + t01 y + t02 + du,   v = t10 x + t11 y + t12 + dv
// and the sample is the bilinear interpolation of the feature plane at (u, v)
// with zero padding: each of the four corners that lies outside
// [0, W-1] x [0, H-1] contributes 0 (grid_sample, align_corners=True, zeros).
// Non-finite locations take the out-of-bounds branch (all corners outside).
#pragma once

#include "common.h"

namespace deformgan_ops {

// The four bilinear corners of one sampling location, in the order
// (x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1).
// idx[i] is the flat index y * W + x of corner i, or -1 when it is outside.
template <typename acc_t>
struct BilinearCorners {
  int64_t idx[4];
  acc_t wx1;  // u - x0
  acc_t wy1;  // v - y0
  bool any;   // at least one corner inside the image
};

template <typename acc_t>
DEFORMGAN_HD void affine_location(const acc_t th[6], acc_t x, acc_t y, acc_t du,
                                  acc_t dv, acc_t& u, acc_t& v) {
  u = th[0] * x + th[1] * y + th[2] + du;
  v = th[3] * x + th[4] * y + th[5] + dv;
}

template <typename acc_t>
DEFORMGAN_HD BilinearCorners<acc_t> bilinear_corners(acc_t u, acc_t v, int64_t H,
                                                     int64_t W) {
  BilinearCorners<acc_t> c;
  c.idx[0] = c.idx[1] = c.idx[2] = c.idx[3] = -1;
  c.wx1 = acc_t(0);
  c.wy1 = acc_t(0);
  c.any = false;
  // The comparisons are false for NaN, so NaN goes down this branch too.
  // Checking before the integer conversion keeps huge values from overflowing.
  if (!(u >= acc_t(-1) && u < acc_t(W) && v >= acc_t(-1) && v < acc_t(H))) {
    return c;
  }
  const acc_t fx = ::floor(u);
  const acc_t fy = ::floor(v);
  const int64_t x0 = static_cast<int64_t>(fx);
  const int64_t y0 = static_cast<int64_t>(fy);
  c.wx1 = u - fx;
  c.wy1 = v - fy;
  const bool x0_in = x0 >= 0 && x0 < W;
  const bool x1_in = x0 + 1 >= 0 && x0 + 1 < W;
  const bool y0_in = y0 >= 0 && y0 < H;
  const bool y1_in = y0 + 1 >= 0 && y0 + 1 < H;
  if (y0_in && x0_in) c.idx[0] = y0 * W + x0;
  if (y0_in && x1_in) c.idx[1] = y0 * W + x0 + 1;
  if (y1_in && x0_in) c.idx[2] = (y0 + 1) * W + x0;
  if (y1_in && x1_in) c.idx[3] = (y0 + 1) * W + x0 + 1;
  c.any = c.idx[0] >= 0 || c.idx[1] >= 0 || c.idx[2] >= 0 || c.idx[3] >= 0;
  return c;
}

// The four corners in the form a kernel that reuses one location across many
// channels wants: outside corners get index 0, all-zero coefficients and
// in[i] false, so the sample is sum_i w[i] * f[i] and its derivatives are
// sum_i du[i] * f[i] and sum_i dv[i] * f[i], with f[i] = plane[idx[i]] for the
// corners inside and 0 for the others (see taps_load: an outside corner is never
// read, so a non-finite value elsewhere cannot leak through a zero weight, and an
// empty plane is never touched).
template <typename acc_t>
struct BilinearTaps {
  int64_t idx[4];
  acc_t w[4];
  acc_t du[4];
  acc_t dv[4];
  bool in[4];
};

template <typename acc_t>
DEFORMGAN_HD BilinearTaps<acc_t> bilinear_taps(const BilinearCorners<acc_t>& c) {
  BilinearTaps<acc_t> t;
  const acc_t wx0 = acc_t(1) - c.wx1;
  const acc_t wy0 = acc_t(1) - c.wy1;
  const acc_t w[4] = {wx0 * wy0, c.wx1 * wy0, wx0 * c.wy1, c.wx1 * c.wy1};
  const acc_t du[4] = {-wy0, wy0, -c.wy1, c.wy1};
  const acc_t dv[4] = {-wx0, -c.wx1, wx0, c.wx1};
DEFORMGAN_UNROLL
  for (int i = 0; i < 4; ++i) {
    const bool in = c.idx[i] >= 0;
    t.in[i] = in;
    t.idx[i] = in ? c.idx[i] : 0;
    t.w[i] = in ? w[i] : acc_t(0);
    t.du[i] = in ? du[i] : acc_t(0);
    t.dv[i] = in ? dv[i] : acc_t(0);
  }
  return t;
}

// Taps of a location with no corner inside: the sample and its derivatives are 0.
template <typename acc_t>
DEFORMGAN_HD BilinearTaps<acc_t> empty_taps() {
  BilinearTaps<acc_t> t;
DEFORMGAN_UNROLL
  for (int i = 0; i < 4; ++i) {
    t.idx[i] = 0;
    t.w[i] = t.du[i] = t.dv[i] = acc_t(0);
    t.in[i] = false;
  }
  return t;
}

// The four corner values when all four corners are inside: plain loads. A
// pixel's value is plane[idx * stride]: stride 1 for a [H, W] plane, C for one
// channel of channels-last [H, W, C] rows (the CPU kernel's layout).
template <typename scalar_t, typename acc_t>
DEFORMGAN_HD void taps_load_inside(const scalar_t* plane, const BilinearTaps<acc_t>& t, acc_t f[4],
                                   int64_t stride = 1) {
DEFORMGAN_UNROLL
  for (int i = 0; i < 4; ++i) f[i] = static_cast<acc_t>(plane[t.idx[i] * stride]);
}

// The four corner values, 0 for a corner outside (which is never read).
template <typename scalar_t, typename acc_t>
DEFORMGAN_HD void taps_load(const scalar_t* plane, const BilinearTaps<acc_t>& t, acc_t f[4], int64_t stride = 1) {
  if (t.in[0] && t.in[1] && t.in[2] && t.in[3]) {  // the common case
    taps_load_inside(plane, t, f, stride);
  } else {
DEFORMGAN_UNROLL
    for (int i = 0; i < 4; ++i) f[i] = t.in[i] ? static_cast<acc_t>(plane[t.idx[i] * stride]) : acc_t(0);
  }
}

template <typename acc_t>
DEFORMGAN_HD acc_t taps_dot(const acc_t coef[4], const acc_t f[4]) {
  return coef[0] * f[0] + coef[1] * f[1] + coef[2] * f[2] + coef[3] * f[3];
}

// The candidate of a part with a nonzero mask at one pixel and channel: mask times
// the bilinear sample (sum of w[i] f[i]; the location derivatives of the sample are
// taps_dot(t.du, f) and taps_dot(t.dv, f), grid_sample's one-sided derivative at
// integers). A part whose mask is exactly 0 contributes exactly 0 and is not sampled;
// a location with no corner inside has empty_taps, so its candidate is mask * 0.
template <typename acc_t>
DEFORMGAN_HD acc_t masked_sample(acc_t mask, const BilinearTaps<acc_t>& t, const acc_t f[4]) {
  return mask * taps_dot(t.w, f);
}

// The taps of part theta at output pixel (x, y) with offset (du, dv).
template <typename acc_t>
DEFORMGAN_HD BilinearTaps<acc_t> location_taps(const acc_t th[6], acc_t x, acc_t y, acc_t du, acc_t dv,
                                               int64_t H, int64_t W) {
  acc_t u, v;
  affine_location(th, x, y, du, dv, u, v);
  const BilinearCorners<acc_t> c = bilinear_corners(u, v, H, W);
  return c.any ? bilinear_taps(c) : empty_taps<acc_t>();
}

// The max over parts (docs/method.md: the operators, non-finite values): a NaN candidate wins over
// any number and keeps winning (the first NaN in p order is the result); among
// numbers a later part replaces the current best only when strictly larger, so
// ties keep the lowest p. This is torch.argmax's rule, which the reference uses.
template <typename acc_t>
DEFORMGAN_HD bool candidate_wins(acc_t candidate, acc_t best) {
  return candidate > best || (candidate != candidate && best == best);
}

// d out / d mask of the winning part is its sample. For a part whose mask is
// exactly zero the candidate is 0 without sampling, so a non-finite sample (a
// NaN or inf feature under the location) gives the mask gradient 0, never NaN.
template <typename acc_t>
DEFORMGAN_HD acc_t mask_grad_sample(acc_t mask, acc_t sample) {
  return (mask == acc_t(0) && !is_finite_value(sample)) ? acc_t(0) : sample;
}

}  // namespace deformgan_ops

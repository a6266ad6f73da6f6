// Per-pose math of the body-part geometry (docs/method.md: body parts): the ten part masks
// and the ten least-squares part affines of Deformable GAN. A transcription of
// the reference, deformgan_ops/reference/pose_geometry.py, shared by the CPU
// and CUDA kernels so that the CPU tests exercise the arithmetic the GPU runs.
//
// Keypoints are 18 (x, y) pairs in the input dtype T; a joint is missing when a
// coordinate is negative or not finite. Parts: 0 torso, 1 head, 2-9 limbs (limb
// l = part - 2). The small least-squares solves run in double, like the reference.
#pragma once

#include "common.h"

namespace deformgan_ops {
namespace pose {

constexpr int kNumJoints = 18;
constexpr int kNumParts = 10;
constexpr int kNumLimbs = 8;
constexpr int kMaxFitPoints = 7;
constexpr double kMaxCondition = 1e4;
constexpr double kMinSpread = 1e-10;

enum Joint : int {
  NOSE = 0, NECK = 1, R_SHOULDER = 2, R_ELBOW = 3, R_WRIST = 4, L_SHOULDER = 5, L_ELBOW = 6,
  L_WRIST = 7, R_HIP = 8, R_KNEE = 9, R_ANKLE = 10, L_HIP = 11, L_KNEE = 12, L_ANKLE = 13,
  R_EYE = 14, L_EYE = 15, R_EAR = 16, L_EAR = 17
};

// Tables as switch functions (constexpr arrays at namespace scope are not
// visible to device code).
DEFORMGAN_HD int torso_joint(int i) {  // r_hip, l_hip, l_shoulder, r_shoulder
  switch (i) {
    case 0: return R_HIP;
    case 1: return L_HIP;
    case 2: return L_SHOULDER;
    default: return R_SHOULDER;
  }
}

// The head fit uses the five head joints and both shoulders.
DEFORMGAN_HD int head_fit_joint(int i) {
  switch (i) {
    case 0: return NOSE;
    case 1: return R_EYE;
    case 2: return L_EYE;
    case 3: return R_EAR;
    case 4: return L_EAR;
    case 5: return R_SHOULDER;
    default: return L_SHOULDER;
  }
}
constexpr int kNumHeadJoints = 5;

// Limb l: segment joint a -> joint b.
DEFORMGAN_HD int limb_joint_a(int l) {
  switch (l) {
    case 0: return R_HIP;
    case 1: return L_HIP;
    case 2: return R_KNEE;
    case 3: return L_KNEE;
    case 4: return R_SHOULDER;
    case 5: return L_SHOULDER;
    case 6: return R_ELBOW;
    default: return L_ELBOW;
  }
}
DEFORMGAN_HD int limb_joint_b(int l) {
  switch (l) {
    case 0: return R_KNEE;
    case 1: return L_KNEE;
    case 2: return R_ANKLE;
    case 3: return L_ANKLE;
    case 4: return R_ELBOW;
    case 5: return L_ELBOW;
    case 6: return R_WRIST;
    default: return L_WRIST;
  }
}
// Upper limbs (l % 4 < 2) extend by 0.1 for the fit and the mask; lower limbs by
// 0.3 for the fit and 0.5 for the mask. The mirror of a limb is the other side's.
DEFORMGAN_HD bool limb_is_upper(int l) { return (l & 3) < 2; }
DEFORMGAN_HD int limb_mirror(int l) { return l ^ 1; }

template <typename T>
DEFORMGAN_HD bool joint_present(const T* kp, int j) {
  const T x = kp[2 * j], y = kp[2 * j + 1];
  return is_finite_value(x) && is_finite_value(y) && x >= T(0) && y >= T(0);
}

// st = sqrt((|Rhip - Rsho|^2 + |Lhip - Lsho|^2) / 2); a missing side takes the
// other side's length; NaN when both sides are missing.
template <typename T>
DEFORMGAN_HD T torso_size(const T* kp) {
  const bool r_ok = joint_present(kp, R_HIP) && joint_present(kp, R_SHOULDER);
  const bool l_ok = joint_present(kp, L_HIP) && joint_present(kp, L_SHOULDER);
  if (!r_ok && !l_ok) return T(NAN);
  const T rx = kp[2 * R_HIP] - kp[2 * R_SHOULDER], ry = kp[2 * R_HIP + 1] - kp[2 * R_SHOULDER + 1];
  const T lx = kp[2 * L_HIP] - kp[2 * L_SHOULDER], ly = kp[2 * L_HIP + 1] - kp[2 * L_SHOULDER + 1];
  T r2 = rx * rx + ry * ry, l2 = lx * lx + ly * ly;
  if (!r_ok) r2 = l2;
  if (!l_ok) l2 = r2;
  return ::sqrt((r2 + l2) / T(2));
}

// Corners (x0, y0, ..., x3, y3) of the rectangle of segment a -> b:
// a' = a + 0.1 (a - b), b' = b + inc (b - a'), corners a' + w n, a' - w n,
// b' - w n, b' + w n with w = 0.2 st and n the unit normal; a zero-length
// segment (< 1e-6) gets a 2 px box around a.
template <typename T>
DEFORMGAN_HD void limb_rectangle(T ax, T ay, T bx, T by, T st, T inc, T* rect) {
  const T dx = bx - ax, dy = by - ay;
  const T length = ::sqrt(dx * dx + dy * dy);
  if (length < T(1e-6)) {
    const T ox[4] = {T(-1), T(1), T(1), T(-1)}, oy[4] = {T(-1), T(-1), T(1), T(1)};
    for (int i = 0; i < 4; ++i) {
      rect[2 * i] = ax + ox[i];
      rect[2 * i + 1] = ay + oy[i];
    }
    return;
  }
  const T a2x = ax + T(0.1) * (ax - bx), a2y = ay + T(0.1) * (ay - by);
  const T b2x = bx + inc * (bx - a2x), b2y = by + inc * (by - a2y);
  const T len = length > T(1e-12) ? length : T(1e-12);
  const T wx = T(0.2) * st * (-dy / len), wy = T(0.2) * st * (dx / len);
  rect[0] = a2x + wx; rect[1] = a2y + wy;
  rect[2] = a2x - wx; rect[3] = a2y - wy;
  rect[4] = b2x - wx; rect[5] = b2y - wy;
  rect[6] = b2x + wx; rect[7] = b2y + wy;
}

// Whether limb l can be drawn/fitted in a pose: both joints present, finite st.
template <typename T>
DEFORMGAN_HD bool limb_present(const T* kp, T st, int l) {
  return joint_present(kp, limb_joint_a(l)) && joint_present(kp, limb_joint_b(l)) &&
         is_finite_value(st);
}

template <typename T>
DEFORMGAN_HD void limb_rectangle_of(const T* kp, T st, int l, bool for_mask, T* rect) {
  const int a = limb_joint_a(l), b = limb_joint_b(l);
  const T inc = limb_is_upper(l) ? T(0.1) : (for_mask ? T(0.5) : T(0.3));
  limb_rectangle(kp[2 * a], kp[2 * a + 1], kp[2 * b], kp[2 * b + 1], is_finite_value(st) ? st : T(0),
                 inc, rect);
}

// ----------------------------------------------------------------- masks

// Row y's interval [lo, hi] of x (pixel centres) inside the convex quad q
// (x0, y0, ..., x3, y3; either orientation): each edge is a half-plane
// a x + b >= 0 that bounds x from one side, with a 1e-6 tolerance so centres on
// an edge are inside. A degenerate (zero-area) quad is empty.
DEFORMGAN_HD void quad_row_bounds(const double* q, double y, double* lo_out, double* hi_out) {
  const double e0x = q[2] - q[0], e0y = q[3] - q[1], e1x = q[4] - q[2], e1y = q[5] - q[3];
  const double cross = e0x * e1y - e0y * e1x;
  const double orient = cross > 0 ? 1.0 : (cross < 0 ? -1.0 : 0.0);
  const double eps = 1e-6;
  double lo = -INFINITY, hi = INFINITY;
  if (orient == 0) lo = INFINITY;
  for (int i = 0; i < 4; ++i) {
    const int j = (i + 1) & 3;
    const double px = q[2 * i], py = q[2 * i + 1];
    const double ex = q[2 * j] - px, ey = q[2 * j + 1] - py;
    const double a = -orient * ey;
    const double b = orient * (ex * (y - py) + ey * px);
    if (a > 0) {
      const double bound = -b / a - eps;
      lo = bound > lo ? bound : lo;
    } else if (a < 0) {
      const double bound = -b / a + eps;
      hi = bound < hi ? bound : hi;
    } else if (b < -eps) {
      lo = INFINITY;
    }
  }
  *lo_out = lo;
  *hi_out = hi;
}

// The mask of one part of one pose at one level, computed once and then
// evaluated per row and column. kind: 0 empty, 1 full (torso), 2 head square,
// 3 convex quad (limb).
template <typename T>
struct MaskShape {
  int kind;
  T cx, cy, ext, scale;  // head: square centre (image pixels), half size, level scale
  double quad[8];        // limb: corners in the level's pixels
};

template <typename T>
DEFORMGAN_HD MaskShape<T> make_mask_shape(const T* kp, int part, T scale, bool enabled) {
  MaskShape<T> s;
  s.kind = 0;
  s.cx = s.cy = s.ext = T(0);
  s.scale = scale;
  for (int i = 0; i < 8; ++i) s.quad[i] = 0.0;
  if (!enabled) return s;
  if (part == 0) {
    bool ok = true;
    for (int i = 0; i < 4; ++i) ok = ok && joint_present(kp, torso_joint(i));
    s.kind = ok ? 1 : 0;
    return s;
  }
  const T st = torso_size(kp);
  if (part == 1) {
    // the square centred on the integer mean of the present head joints,
    // extended by int(0.4 st) on each side
    int count = 0;
    T sx = T(0), sy = T(0);
    for (int i = 0; i < kNumHeadJoints; ++i) {
      const int j = head_fit_joint(i);
      if (joint_present(kp, j)) {
        sx += kp[2 * j];
        sy += kp[2 * j + 1];
        ++count;
      }
    }
    if (count == 0 || !is_finite_value(st)) return s;
    s.kind = 2;
    s.cx = ::floor(sx / T(count));
    s.cy = ::floor(sy / T(count));
    s.ext = ::floor(T(0.4) * st);
    return s;
  }
  const int l = part - 2;
  if (!limb_present(kp, st, l)) return s;
  T rect[8];
  limb_rectangle_of(kp, st, l, /*for_mask=*/true, rect);
  for (int i = 0; i < 8; ++i) s.quad[i] = static_cast<double>(rect[i] / scale);
  s.kind = 3;
  return s;
}

// Per row: whether the row can hold any inside pixel and, for quads, the x bounds.
struct MaskRow {
  bool any;
  double lo, hi;
};

template <typename T>
DEFORMGAN_HD MaskRow mask_row(const MaskShape<T>& s, int64_t y) {
  MaskRow r;
  r.lo = -INFINITY;
  r.hi = INFINITY;
  switch (s.kind) {
    case 1:
      r.any = true;
      break;
    case 2: {
      const T d = static_cast<T>(y) * s.scale - s.cy;
      r.any = (d < T(0) ? -d : d) <= s.ext;
      break;
    }
    case 3:
      quad_row_bounds(s.quad, static_cast<double>(y), &r.lo, &r.hi);
      r.any = r.lo <= r.hi;
      break;
    default:
      r.any = false;
  }
  return r;
}

// The mask value (0 or 1) at column x of a row.
template <typename T>
DEFORMGAN_HD bool mask_inside(const MaskShape<T>& s, const MaskRow& r, int64_t x) {
  if (!r.any) return false;
  if (s.kind == 2) {
    const T d = static_cast<T>(x) * s.scale - s.cx;
    return (d < T(0) ? -d : d) <= s.ext;
  }
  const double xd = static_cast<double>(x);
  return xd >= r.lo && xd <= r.hi;
}

// ----------------------------------------------------------------- affines

// Eigen-decomposition of a symmetric n x n matrix a (row-major, destroyed) by
// cyclic Jacobi rotations: the eigenvalues are left on a's diagonal and the
// eigenvectors in the columns of v.
template <int n>
DEFORMGAN_HD void symmetric_eigen(double* a, double* v) {
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) v[i * n + j] = i == j ? 1.0 : 0.0;
  for (int sweep = 0; sweep < 64; ++sweep) {
    double off = 0.0, total = 0.0;
    for (int p = 0; p < n; ++p) {
      for (int q = 0; q < n; ++q) {
        const double x = a[p * n + q] * a[p * n + q];
        total += x;
        if (p != q) off += x;
      }
    }
    if (!(off > 1e-30 * total)) break;  // converged (or NaN: nothing to do)
    for (int p = 0; p < n - 1; ++p) {
      for (int q = p + 1; q < n; ++q) {
        const double apq = a[p * n + q];
        const double g = 1e3 * (apq < 0 ? -apq : apq);
        const double app = a[p * n + p] < 0 ? -a[p * n + p] : a[p * n + p];
        const double aqq = a[q * n + q] < 0 ? -a[q * n + q] : a[q * n + q];
        if (app + g == app && aqq + g == aqq) {  // below rounding of both diagonals
          a[p * n + q] = a[q * n + p] = 0.0;
          continue;
        }
        const double theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
        const double abs_theta = theta < 0 ? -theta : theta;
        double t = abs_theta > 1e150 ? 0.5 / abs_theta : 1.0 / (abs_theta + ::sqrt(theta * theta + 1.0));
        if (theta < 0) t = -t;
        const double c = 1.0 / ::sqrt(t * t + 1.0), s = t * c;
        for (int r = 0; r < n; ++r) {  // columns p, q
          const double arp = a[r * n + p], arq = a[r * n + q];
          a[r * n + p] = c * arp - s * arq;
          a[r * n + q] = s * arp + c * arq;
        }
        for (int r = 0; r < n; ++r) {  // rows p, q
          const double apr = a[p * n + r], aqr = a[q * n + r];
          a[p * n + r] = c * apr - s * aqr;
          a[q * n + r] = s * apr + c * aqr;
        }
        for (int r = 0; r < n; ++r) {
          const double vrp = v[r * n + p], vrq = v[r * n + q];
          v[r * n + p] = c * vrp - s * vrq;
          v[r * n + q] = s * vrp + c * vrq;
        }
      }
    }
  }
}

// 2-norm condition number of a 3x3 matrix h (row-major): sqrt of the ratio of
// the extreme eigenvalues of h^T h; inf when singular.
DEFORMGAN_HD double condition_3x3(const double* h) {
  double g[9], v[9];
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) g[i * 3 + j] = h[i] * h[j] + h[3 + i] * h[3 + j] + h[6 + i] * h[6 + j];
  symmetric_eigen<3>(g, v);
  double lo = g[0], hi = g[0];
  for (int i = 1; i < 3; ++i) {
    lo = g[i * 4] < lo ? g[i * 4] : lo;
    hi = g[i * 4] > hi ? g[i * 4] : hi;
  }
  if (!(lo > 0.0)) return INFINITY;
  return ::sqrt(hi / lo);
}

// The weighted centroid and root-mean-square coordinate of points (x, y) with
// weights w in {0, 1} (Hartley normalisation: p -> (p - c) / rms).
DEFORMGAN_HD void normalisation(const double* x, const double* y, const double* w, int k, double* cx,
                                double* cy, double* rms) {
  double count = 0, sx = 0, sy = 0;
  for (int i = 0; i < k; ++i) {
    count += w[i];
    sx += x[i] * w[i];
    sy += y[i] * w[i];
  }
  count = count > 1 ? count : 1;
  *cx = sx / count;
  *cy = sy / count;
  double ss = 0;
  for (int i = 0; i < k; ++i) {
    const double dx = (x[i] - *cx) * w[i], dy = (y[i] - *cy) * w[i];
    ss += dx * dx + dy * dy;
  }
  *rms = ::sqrt(ss / (2 * count));
}

// Least-squares affine mapping target points (tx, ty) to source points (sx, sy),
// as skimage.transform.estimate_transform("affine", target, source) computes it:
// both point sets Hartley-normalised, rows [x, y, 1, 0, 0, 0, X] and
// [0, 0, 0, x, y, 1, Y] of the present points, the solution the eigenvector of
// A^T A with the smallest eigenvalue (A's last right singular vector), then
// de-normalised. theta (2x3, row-major) is zero and false is returned unless
// there are >= 3 points, the target points are not collinear, everything is
// finite and cond(H) < 1e4.
DEFORMGAN_HD bool fit_affine(const double* tx, const double* ty, const double* sx, const double* sy,
                             const double* w, int k, double* theta) {
  for (int i = 0; i < 6; ++i) theta[i] = 0.0;
  double count = 0;
  for (int i = 0; i < k; ++i) count += w[i];
  double tcx, tcy, trms, scx, scy, srms;
  normalisation(tx, ty, w, k, &tcx, &tcy, &trms);
  normalisation(sx, sy, w, k, &scx, &scy, &srms);
  const double tinv = 1.0 / trms, sinv = 1.0 / srms;
  const bool finite_norm = is_finite_value(tinv) && is_finite_value(sinv) && is_finite_value(tcx * tinv) &&
                           is_finite_value(tcy * tinv) && is_finite_value(scx * sinv) &&
                           is_finite_value(scy * sinv);
  if (count < 3 || !finite_norm) return false;
  // the present target points must span the plane: the determinant of their
  // normalised covariance (trace 2) is ~0 only when they are collinear
  double cxx = 0, cyy = 0, cxy = 0;
  for (int i = 0; i < k; ++i) {
    if (w[i] == 0) continue;
    const double x = tx[i] * tinv - tcx * tinv, y = ty[i] * tinv - tcy * tinv;
    cxx += x * x;
    cyy += y * y;
    cxy += x * y;
  }
  cxx /= count; cyy /= count; cxy /= count;
  if (!(cxx * cyy - cxy * cxy > kMinSpread)) return false;
  double m[49];
  for (int i = 0; i < 49; ++i) m[i] = 0.0;
  for (int i = 0; i < k; ++i) {
    if (w[i] == 0) continue;
    const double x = tx[i] * tinv - tcx * tinv, y = ty[i] * tinv - tcy * tinv;
    const double X = sx[i] * sinv - scx * sinv, Y = sy[i] * sinv - scy * sinv;
    const double r1[7] = {x, y, 1, 0, 0, 0, X}, r2[7] = {0, 0, 0, x, y, 1, Y};
    for (int p = 0; p < 7; ++p)
      for (int q = 0; q < 7; ++q) m[p * 7 + q] += r1[p] * r1[q] + r2[p] * r2[q];
  }
  for (int i = 0; i < 49; ++i)
    if (!is_finite_value(m[i])) return false;
  double v[49];
  symmetric_eigen<7>(m, v);
  int best = 0;
  for (int i = 1; i < 7; ++i)
    if (m[i * 8] < m[best * 8]) best = i;
  const double last = v[6 * 7 + best];
  if (!((last < 0 ? -last : last) > 1e-8)) return false;
  double hn[9];
  for (int i = 0; i < 6; ++i) hn[i] = -v[i * 7 + best] / last;
  hn[6] = 0; hn[7] = 0; hn[8] = 1;
  // H = S^-1 Hn T with T = [[tinv, 0, -tcx tinv], [0, tinv, -tcy tinv], [0, 0, 1]]
  // and S^-1 = [[srms, 0, scx], [0, srms, scy], [0, 0, 1]]
  double ht[9];
  for (int r = 0; r < 3; ++r) {
    ht[r * 3 + 0] = hn[r * 3 + 0] * tinv;
    ht[r * 3 + 1] = hn[r * 3 + 1] * tinv;
    ht[r * 3 + 2] = hn[r * 3 + 0] * (-tcx * tinv) + hn[r * 3 + 1] * (-tcy * tinv) + hn[r * 3 + 2];
  }
  double h[9];
  for (int c = 0; c < 3; ++c) {
    h[0 + c] = srms * ht[0 + c] + scx * ht[6 + c];
    h[3 + c] = srms * ht[3 + c] + scy * ht[6 + c];
    h[6 + c] = ht[6 + c];
  }
  const double h22 = h[8];
  for (int i = 0; i < 9; ++i) {
    h[i] /= h22;
    if (!is_finite_value(h[i])) return false;
  }
  const double cond = condition_3x3(h);
  if (!(cond < kMaxCondition)) return false;
  for (int i = 0; i < 6; ++i) theta[i] = h[i];
  return true;
}

// Fit point i from joint j, or a zero point of weight 0 when the joint is not
// in both poses (a missing joint may be NaN or inf, and inf * 0 is NaN).
template <typename T>
DEFORMGAN_HD void take_point(const T* src, const T* tgt, int j, bool both, int i, double* tx, double* ty,
                             double* sx, double* sy, double* w) {
  tx[i] = both ? static_cast<double>(tgt[2 * j]) : 0.0;
  ty[i] = both ? static_cast<double>(tgt[2 * j + 1]) : 0.0;
  sx[i] = both ? static_cast<double>(src[2 * j]) : 0.0;
  sy[i] = both ? static_cast<double>(src[2 * j + 1]) : 0.0;
  w[i] = both ? 1.0 : 0.0;
}

// The affine of one part of one pose pair (target -> source, pixels): theta [2][3]
// (zero when not valid) and valid. Torso (part 0): its four joints, present in both
// poses. Head (part 1): the head joints and shoulders present in both (at least one
// head joint). Limbs (parts 2..9): the four rectangle corners; a limb missing in the
// source is fitted from the source's mirror limb. Each part is independent, so a GPU
// runs one thread per (pair, part).
template <typename T>
DEFORMGAN_HD bool part_affine_of_pair(const T* src, const T* tgt, int part, double* th) {
  double tx[kMaxFitPoints], ty[kMaxFitPoints], sx[kMaxFitPoints], sy[kMaxFitPoints], w[kMaxFitPoints];
  bool ok = false;
  if (part == 0) {
    bool all_torso = true;
    for (int i = 0; i < 4; ++i) {
      const int j = torso_joint(i);
      const bool both = joint_present(src, j) && joint_present(tgt, j);
      all_torso = all_torso && both;
      take_point(src, tgt, j, both, i, tx, ty, sx, sy, w);
    }
    ok = fit_affine(tx, ty, sx, sy, w, 4, th) && all_torso;
  } else if (part == 1) {
    bool any_head = false;
    for (int i = 0; i < 7; ++i) {
      const int j = head_fit_joint(i);
      const bool both = joint_present(src, j) && joint_present(tgt, j);
      if (i < kNumHeadJoints) any_head = any_head || both;
      take_point(src, tgt, j, both, i, tx, ty, sx, sy, w);
    }
    ok = fit_affine(tx, ty, sx, sy, w, 7, th) && any_head;
  } else {
    const int l = part - 2;
    const T st_t = torso_size(tgt), st_s = torso_size(src);
    const bool t_ok = limb_present(tgt, st_t, l);
    const bool s_ok = limb_present(src, st_s, l);
    const bool m_ok = limb_present(src, st_s, limb_mirror(l));
    if (t_ok && (s_ok || m_ok)) {
      T t_rect[8], s_rect[8];
      limb_rectangle_of(tgt, st_t, l, /*for_mask=*/false, t_rect);
      limb_rectangle_of(src, st_s, s_ok ? l : limb_mirror(l), /*for_mask=*/false, s_rect);
      for (int i = 0; i < 4; ++i) {
        tx[i] = t_rect[2 * i]; ty[i] = t_rect[2 * i + 1];
        sx[i] = s_rect[2 * i]; sy[i] = s_rect[2 * i + 1];
        w[i] = 1.0;
      }
      ok = fit_affine(tx, ty, sx, sy, w, 4, th);
    }
  }
  if (!ok)
    for (int i = 0; i < 6; ++i) th[i] = 0.0;
  return ok;
}

}  // namespace pose
}  // namespace deformgan_ops

// CPU kernels of part_affine_warp: forward and backward.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/AccumulateType.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdlib>
#include <memory>
#include <string>
#include <type_traits>
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <vector>

#include "../checks.h"
#include "cpu_utils.h"
#include "../part_affine_warp_math.h"

namespace deformgan_ops {
namespace {

// Layout: the kernels work channels-last. A pixel's C channels share one sampling
// location per part, so with the features as [N, H, W, C] rows the four corners
// of a sample are four contiguous C-vectors and the channel loops below vectorise
// (plain loads, no gathers). Contiguous [N, C, H, W] features: each task converts
// the batch items it works on into its own [H, W, C] buffer (ChannelsLastItem),
// which stays in its cache, and the output, the winners and the incoming gradient
// stay [N, C, Ho, Wo]: a block of output rows (about 512 pixels, rows_per_block)
// is assembled as a [pixels, C] tile in cache and transposed on the way out (or
// in), one run of the block's pixels per plane (register blocks as wide as the CPU
// allows; large outputs written with non-temporal stores: TransposeSettings). Channels-last features
// (warp_layout): every one of those tensors is channels-last too and is read or
// written in place, with no conversion and no transposes. Every element is computed with the
// shared math (../part_affine_warp_math.h) in the same order as before, so the
// results are bit-identical to a per-channel loop.

// One part that can win at a pixel (see the forward's loop): a sampled part (its
// taps and corner rows; outside corners point at a row of zeros with weight 0,
// taps_load's rule: nothing outside is read) or a part that is not sampled, whose
// candidate is the same value in every channel.
template <typename acc_t>
struct WarpCandidate {
  BilinearTaps<acc_t> t;
  const acc_t* r[4];
  acc_t mask;
  acc_t constant;  // the candidate when not sampled
  int32_t part;
  bool sampled;
};

// The C channels of one pixel: best[c] and best_p[c], the max over its candidates
// (in increasing p), one pass over the channels per candidate. The winners are
// uint8 (the part index fits: P <= 255 is checked), written in place (channels-last)
// or into a tile that is transposed out. Inlined into warp_pixel (any C) and
// warp_pixel_c64 (C a multiple of 64: with an AVX-512 clone, see cpu_utils.h).
template <typename acc_t>
DEFORMGAN_ALWAYS_INLINE void warp_pixel_channels(acc_t* __restrict__ best, uint8_t* __restrict__ best_p,
                                                 const WarpCandidate<acc_t>* __restrict__ cands, int n, int64_t C) {
  for (int i = 0; i < n; ++i) {
    const WarpCandidate<acc_t>& e = cands[i];
    const uint8_t part = static_cast<uint8_t>(e.part);
    if (e.sampled) {
      const acc_t* __restrict__ f0 = e.r[0];
      const acc_t* __restrict__ f1 = e.r[1];
      const acc_t* __restrict__ f2 = e.r[2];
      const acc_t* __restrict__ f3 = e.r[3];
      const acc_t mask = e.mask;
      if (i == 0) {
        for (int64_t c = 0; c < C; ++c) {
          const acc_t f[4] = {f0[c], f1[c], f2[c], f3[c]};
          best[c] = masked_sample(mask, e.t, f);
          best_p[c] = part;
        }
        continue;
      }
      for (int64_t c = 0; c < C; ++c) {
        const acc_t f[4] = {f0[c], f1[c], f2[c], f3[c]};
        const acc_t cand = masked_sample(mask, e.t, f);
        const bool wins = candidate_wins(cand, best[c]);
        best[c] = wins ? cand : best[c];
        best_p[c] = wins ? part : best_p[c];
      }
    } else {
      const acc_t cand = e.constant;
      if (i == 0) {
        for (int64_t c = 0; c < C; ++c) {
          best[c] = cand;
          best_p[c] = part;
        }
        continue;
      }
      for (int64_t c = 0; c < C; ++c) {
        const bool wins = candidate_wins(cand, best[c]);
        best[c] = wins ? cand : best[c];
        best_p[c] = wins ? part : best_p[c];
      }
    }
  }
}

template <typename acc_t>
DEFORMGAN_CPU_CLONES void warp_pixel(acc_t* __restrict__ best, uint8_t* __restrict__ best_p,
                                     const WarpCandidate<acc_t>* __restrict__ cands, int n, int64_t C) {
  warp_pixel_channels(best, best_p, cands, n, C);
}

template <typename acc_t>
DEFORMGAN_CPU_CLONES_AVX512 void warp_pixel_c64(acc_t* __restrict__ best, uint8_t* __restrict__ best_p,
                                                const WarpCandidate<acc_t>* __restrict__ cands, int n, int64_t C) {
  warp_pixel_channels(best, best_p, cands, n, C);
}

// Which parts have a nonzero mask at each pixel of one output row: bit p % 64 of
// word p / 64 of nonzero[x * words + ...] (NaN counts as nonzero, like mv != 0).
// One pass along each plane's row, instead of P strided loads per pixel.
template <typename acc_t>
void nonzero_parts(const acc_t* mask_row, int64_t plane, int64_t P, int64_t Wo, int64_t words, uint64_t* nonzero) {
  std::fill(nonzero, nonzero + Wo * words, uint64_t(0));
  for (int64_t p = 0; p < P; ++p) {
    const acc_t* m = mask_row + p * plane;
    uint64_t* nz = nonzero + p / 64;
    const int bit = static_cast<int>(p % 64);
    for (int64_t x = 0; x < Wo; ++x) nz[x * words] |= uint64_t(m[x] != acc_t(0)) << bit;
  }
}

// The parts to visit at one pixel, in increasing p: every part with a nonzero mask
// and the first part whose mask is zero (the bitmask of nonzero_parts).
//   PartsToVisit parts(nonzero + x * words, words, P);
//   while (parts.next(p, zero_mask)) ...
class PartsToVisit {
 public:
  PartsToVisit(const uint64_t* nonzero, int64_t words, int64_t P) : nonzero_(nonzero), words_(words), P_(P) {
    load(0);
  }

  bool next(int64_t& p, bool& zero_mask) {
    while (todo_ == 0) {
      if (++w_ >= words_) return false;
      load(w_);
    }
    const int bit = __builtin_ctzll(todo_);
    todo_ &= todo_ - 1;
    p = w_ * 64 + bit;
    zero_mask = ((nonzero_[w_] >> bit) & 1) == 0;
    return true;
  }

 private:
  void load(int64_t w) {
    todo_ = nonzero_[w];
    if (!zero_seen_ && ~nonzero_[w] != 0) {
      const uint64_t first_zero = ~nonzero_[w] & (nonzero_[w] + 1);  // the lowest unset bit
      zero_seen_ = true;
      if (w * 64 + __builtin_ctzll(first_zero) < P_) todo_ |= first_zero;
    }
  }

  const uint64_t* nonzero_;
  int64_t words_, P_, w_ = 0;
  uint64_t todo_ = 0;
  bool zero_seen_ = false;
};

// grad_features of one part at one pixel: g_k[c] += (win[c] == part ? go[c] * mask : 0) * w[k]
// for its four corners (outside corners point at a scratch row; their weight is 0).
template <typename acc_t>
DEFORMGAN_ALWAYS_INLINE void scatter_winner_grad(acc_t* __restrict__ g0, acc_t* __restrict__ g1,
                                              acc_t* __restrict__ g2, acc_t* __restrict__ g3,
                                              const acc_t* __restrict__ go, const uint8_t* __restrict__ win,
                                              const BilinearTaps<acc_t>& t, acc_t mask, uint8_t part, int64_t C) {
  const acc_t w0 = t.w[0], w1 = t.w[1], w2 = t.w[2], w3 = t.w[3];
  for (int64_t c = 0; c < C; ++c) {
    const acc_t v = go[c] * mask;
    const acc_t gm = win[c] == part ? v : acc_t(0);
    g0[c] += gm * w0;
    g1[c] += gm * w1;
    g2[c] += gm * w2;
    g3[c] += gm * w3;
  }
}

// out[i] = in[i] for a contiguous run, with a cast. The restrict pointers let it
// vectorise: written inline, a uint8_t store may alias anything, and the compiler
// reloaded every captured variable at each element (a fifth of the forward's time).
template <typename in_t, typename out_t>
DEFORMGAN_CPU_CLONES void convert_run(const in_t* __restrict__ in, out_t* __restrict__ out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<out_t>(in[i]);
}

// [rows, cols] (row stride ld_in) -> [cols, rows] (row stride ld_out). The side
// with the larger row stride (a plane of [C, H, W]) is walked in the outer loop,
// so the inner loop runs along its rows: stepping a power-of-two plane stride in
// the inner loop would touch lines that share one L1 set and evict each other.

// Any element types (a cast on the way), scalar, in blocks that stay in cache.
template <typename in_t, typename out_t>
void transpose_scalar(const in_t* in, int64_t ld_in, out_t* out, int64_t ld_out, int64_t r_begin, int64_t rows,
                      int64_t c_begin, int64_t cols) {
  constexpr int64_t kBlock = 16;
  for (int64_t r0 = r_begin; r0 < rows; r0 += kBlock) {
    const int64_t r1 = std::min(rows, r0 + kBlock);
    for (int64_t c0 = c_begin; c0 < cols; c0 += kBlock) {
      const int64_t c1 = std::min(cols, c0 + kBlock);
      if (ld_in >= ld_out) {
        for (int64_t r = r0; r < r1; ++r) {
          for (int64_t c = c0; c < c1; ++c) out[c * ld_out + r] = static_cast<out_t>(in[r * ld_in + c]);
        }
      } else {
        for (int64_t c = c0; c < c1; ++c) {
          for (int64_t r = r0; r < r1; ++r) out[c * ld_out + r] = static_cast<out_t>(in[r * ld_in + c]);
        }
      }
    }
  }
}

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define DEFORMGAN_AVX2_TRANSPOSE 1
// 32-bit elements in 8 x 8 register blocks (AVX2 unpack / shuffle / permute), the
// ragged edges scalar. Pure data movement: the bits are unchanged.
__attribute__((target("avx2"), always_inline)) inline void transpose8x8_avx2(const float* in, int64_t ld_in,
                                                                             float* out, int64_t ld_out, int64_t r,
                                                                             int64_t c) {
    const float* src = in + r * ld_in + c;
    const __m256 a0 = _mm256_loadu_ps(src), a1 = _mm256_loadu_ps(src + ld_in),
                 a2 = _mm256_loadu_ps(src + 2 * ld_in), a3 = _mm256_loadu_ps(src + 3 * ld_in),
                 a4 = _mm256_loadu_ps(src + 4 * ld_in), a5 = _mm256_loadu_ps(src + 5 * ld_in),
                 a6 = _mm256_loadu_ps(src + 6 * ld_in), a7 = _mm256_loadu_ps(src + 7 * ld_in);
    const __m256 t0 = _mm256_unpacklo_ps(a0, a1), t1 = _mm256_unpackhi_ps(a0, a1),
                 t2 = _mm256_unpacklo_ps(a2, a3), t3 = _mm256_unpackhi_ps(a2, a3),
                 t4 = _mm256_unpacklo_ps(a4, a5), t5 = _mm256_unpackhi_ps(a4, a5),
                 t6 = _mm256_unpacklo_ps(a6, a7), t7 = _mm256_unpackhi_ps(a6, a7);
    const __m256 s0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0)),
                 s1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2)),
                 s2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0)),
                 s3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2)),
                 s4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0)),
                 s5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2)),
                 s6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0)),
                 s7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
    float* dst = out + c * ld_out + r;
    _mm256_storeu_ps(dst, _mm256_permute2f128_ps(s0, s4, 0x20));
    _mm256_storeu_ps(dst + ld_out, _mm256_permute2f128_ps(s1, s5, 0x20));
    _mm256_storeu_ps(dst + 2 * ld_out, _mm256_permute2f128_ps(s2, s6, 0x20));
    _mm256_storeu_ps(dst + 3 * ld_out, _mm256_permute2f128_ps(s3, s7, 0x20));
    _mm256_storeu_ps(dst + 4 * ld_out, _mm256_permute2f128_ps(s0, s4, 0x31));
    _mm256_storeu_ps(dst + 5 * ld_out, _mm256_permute2f128_ps(s1, s5, 0x31));
    _mm256_storeu_ps(dst + 6 * ld_out, _mm256_permute2f128_ps(s2, s6, 0x31));
    _mm256_storeu_ps(dst + 7 * ld_out, _mm256_permute2f128_ps(s3, s7, 0x31));
}

__attribute__((target("avx2"))) void transpose32_avx2(const float* in, int64_t ld_in, float* out, int64_t ld_out,
                                                       int64_t rows, int64_t cols) {
  const int64_t R = rows / 8 * 8, Cb = cols / 8 * 8;
  if (ld_in >= ld_out) {
    // Two 8-row blocks per column step: each 64-byte line of the output is
    // written whole (16 floats) before the walk moves on.
    int64_t r = 0;
    for (; r + 16 <= R; r += 16)
      for (int64_t c = 0; c < Cb; c += 8) {
        transpose8x8_avx2(in, ld_in, out, ld_out, r, c);
        transpose8x8_avx2(in, ld_in, out, ld_out, r + 8, c);
      }
    for (; r < R; r += 8)
      for (int64_t c = 0; c < Cb; c += 8) transpose8x8_avx2(in, ld_in, out, ld_out, r, c);
  } else {
    // In chunks of 512 rows ([512, cols], 128 KB at 64 columns, stays in L2 while
    // each 8-column step reads it again): walking every row per column step read a
    // whole [H * W, C] item (2 MB at C64 128x64) from L3 once per 8 columns, which
    // made the feature gradient's transpose 2.2x slower (standalone: 2.9 -> 1.5 ms
    // for 8 such items, one thread).
    constexpr int64_t kRows = 512;
    for (int64_t r0 = 0; r0 < R; r0 += kRows)
      for (int64_t c = 0; c < Cb; c += 8)
        for (int64_t r = r0; r < std::min(R, r0 + kRows); r += 8) transpose8x8_avx2(in, ld_in, out, ld_out, r, c);
  }
  transpose_scalar(in, ld_in, out, ld_out, R, rows, 0, cols);  // the last rows % 8 rows
  transpose_scalar(in, ld_in, out, ld_out, 0, R, Cb, cols);    // the last cols % 8 columns
}

inline bool cpu_has_avx2() {
  static const bool ok = __builtin_cpu_supports("avx2");
  return ok;
}

// GCC 12's AVX-512 intrinsics pass _mm512_undefined_ps() to their builtins, which
// -Wmaybe-uninitialized reports at every inlined call (GCC bug 105593, fixed in 13).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
// 16 elements as floats: float32 loaded, bfloat16 widened (its bits are a float's top
// half: exact, as c10::BFloat16's conversion).
__attribute__((target("avx512f"), always_inline)) inline __m512 load16_avx512(const float* p) {
  return _mm512_loadu_ps(p);
}
__attribute__((target("avx512f"), always_inline)) inline __m512 load16_avx512(const c10::BFloat16* p) {
  const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}

// 16 floats stored as float32 (kStream: one non-temporal 64-byte line, p aligned:
// TransposeSettings::stream) or rounded to bfloat16 as c10::BFloat16 rounds: to nearest
// even, NaN -> 0x7FC0 (bit-identical to the scalar conversion for every input).
template <bool kStream>
__attribute__((target("avx512f"), always_inline)) inline void store16_avx512(float* p, __m512 v) {
  if constexpr (kStream) {
    _mm512_stream_ps(p, v);
  } else {
    _mm512_storeu_ps(p, v);
  }
}
template <bool kStream>
__attribute__((target("avx512f"), always_inline)) inline void store16_avx512(c10::BFloat16* p, __m512 v) {
  static_assert(!kStream, "bfloat16 rows are half a line: not streamed");
  const __m512i u = _mm512_castps_si512(v);
  const __m512i bias = _mm512_add_epi32(_mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1)),
                                        _mm512_set1_epi32(0x7FFF));
  __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, bias), 16);
  r = _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), _mm512_set1_epi32(0x7FC0));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(r));
}

// 16 x 16 register blocks of floats (AVX-512: an unpack round, a shuffle round, two
// rounds of 128-bit lane shuffles), float32 or bfloat16 on either side (converted on
// the way in or out), the ragged edges scalar. Each float32 row a block writes is one
// whole 64-byte line when the output is aligned, which is what lets kStream write it
// with a non-temporal store (see TransposeSettings).
template <bool kStream, typename in_t, typename out_t>
__attribute__((target("avx512f"), always_inline)) inline void transpose16x16_avx512(const in_t* in, int64_t ld_in,
                                                                                   out_t* out, int64_t ld_out,
                                                                                   int64_t r, int64_t c) {
  const in_t* src = in + r * ld_in + c;
  __m512 a[16], t[16];
  for (int i = 0; i < 16; ++i) a[i] = load16_avx512(src + i * ld_in);
  // t[2i], t[2i + 1]: rows 2i and 2i + 1 interleaved, low and high pairs of each 128-bit lane.
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(a[2 * i], a[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(a[2 * i], a[2 * i + 1]);
  }
  // a[4i + j], lane l: column 4l + j of rows 4i .. 4i + 3.
  for (int i = 0; i < 4; ++i) {
    a[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    a[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    a[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    a[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  // t[j] / t[4 + j]: columns j, 8 + j / 4 + j, 12 + j of rows 0 .. 7; t[8 + j] / t[12 + j]: of rows 8 .. 15.
  for (int j = 0; j < 4; ++j) {
    t[j] = _mm512_shuffle_f32x4(a[j], a[4 + j], 0x88);
    t[4 + j] = _mm512_shuffle_f32x4(a[j], a[4 + j], 0xdd);
    t[8 + j] = _mm512_shuffle_f32x4(a[8 + j], a[12 + j], 0x88);
    t[12 + j] = _mm512_shuffle_f32x4(a[8 + j], a[12 + j], 0xdd);
  }
  out_t* dst = out + c * ld_out + r;
  for (int j = 0; j < 4; ++j) {
    store16_avx512<kStream>(dst + j * ld_out, _mm512_shuffle_f32x4(t[j], t[8 + j], 0x88));
    store16_avx512<kStream>(dst + (j + 8) * ld_out, _mm512_shuffle_f32x4(t[j], t[8 + j], 0xdd));
    store16_avx512<kStream>(dst + (j + 4) * ld_out, _mm512_shuffle_f32x4(t[4 + j], t[12 + j], 0x88));
    store16_avx512<kStream>(dst + (j + 12) * ld_out, _mm512_shuffle_f32x4(t[4 + j], t[12 + j], 0xdd));
  }
}

// The blocks walk the tensors as transpose32_avx2's do (a 16-row block writes whole
// lines by itself). Standalone, 8 items of C64 x 8192 pixels, 2 threads: a [C, pixels]
// plane run in 0.91 -> 0.81 ms, out 0.80 -> 0.71 ms (0.63 ms streamed).
template <bool kStream, typename in_t, typename out_t>
__attribute__((target("avx512f"))) void transpose_avx512(const in_t* in, int64_t ld_in, out_t* out, int64_t ld_out,
                                                         int64_t rows, int64_t cols) {
  const int64_t R = rows / 16 * 16, Cb = cols / 16 * 16;
  if (ld_in >= ld_out) {
    for (int64_t r = 0; r < R; r += 16)
      for (int64_t c = 0; c < Cb; c += 16) transpose16x16_avx512<kStream, in_t, out_t>(in, ld_in, out, ld_out, r, c);
  } else {
    constexpr int64_t kRows = 512;  // as in transpose32_avx2: a [512, cols] chunk stays in L2
    for (int64_t r0 = 0; r0 < R; r0 += kRows)
      for (int64_t c = 0; c < Cb; c += 16)
        for (int64_t r = r0; r < std::min(R, r0 + kRows); r += 16)
          transpose16x16_avx512<kStream, in_t, out_t>(in, ld_in, out, ld_out, r, c);
  }
  if constexpr (kStream) _mm_sfence();  // the streamed lines are ordered before anything after
  transpose_scalar(in, ld_in, out, ld_out, R, rows, 0, cols);  // the last rows % 16 rows
  transpose_scalar(in, ld_in, out, ld_out, 0, R, Cb, cols);    // the last cols % 16 columns
}

#pragma GCC diagnostic pop

inline bool cpu_has_avx512() {
  static const bool ok = __builtin_cpu_supports("avx512f");
  return ok;
}
#endif

// The widest register blocks a transpose may use.
enum class TransposeIsa : int { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };

inline TransposeIsa machine_transpose_isa() {
#ifdef DEFORMGAN_AVX2_TRANSPOSE
  if (cpu_has_avx512()) return TransposeIsa::kAvx512;
  if (cpu_has_avx2()) return TransposeIsa::kAvx2;
#endif
  return TransposeIsa::kScalar;
}

// How the CPU kernels transpose, read from the environment at each operator call (so
// that tests and benchmarks can run every path on one machine):
//   DEFORMGAN_CPU_TRANSPOSE=avx512|avx2|scalar  the widest register blocks the
//       transposes may use (default, and at most: the widest the CPU has);
//   DEFORMGAN_STREAM_MIN_BYTES=N  the smallest output written with non-temporal
//       stores (default 1 MiB; they need avx512).
// Non-temporal stores: a store into a line that is not in cache first reads the line
// from memory (read for ownership); a non-temporal store writes the whole line without
// reading it, so writing an output that goes to memory anyway moves half the bytes
// (standalone, 16.8 MB out of cache, 2 threads: 1.57 -> 0.63 ms). They also leave the
// output out of cache for its next reader: outputs under a core's L2 keep ordinary
// stores. (At the generator's warp levels, batch 4, a convolution reading the output
// showed no difference either way: 2 to 8 MiB.)
struct TransposeSettings {
  TransposeIsa isa = TransposeIsa::kScalar;
  int64_t stream_min_bytes = int64_t(1) << 20;

  static TransposeSettings from_environment() {
    TransposeSettings s;
    s.isa = machine_transpose_isa();
    if (const char* v = std::getenv("DEFORMGAN_CPU_TRANSPOSE"); v != nullptr && *v != '\0') {
      const std::string want(v);
      TransposeIsa isa = TransposeIsa::kScalar;
      if (want == "avx512") {
        isa = TransposeIsa::kAvx512;
      } else if (want == "avx2") {
        isa = TransposeIsa::kAvx2;
      } else {
        TORCH_CHECK(want == "scalar", "DEFORMGAN_CPU_TRANSPOSE must be avx512, avx2 or scalar, got '", want, "'");
      }
      s.isa = std::min(s.isa, isa);
    }
    if (const char* v = std::getenv("DEFORMGAN_STREAM_MIN_BYTES"); v != nullptr && *v != '\0') {
      char* end = nullptr;
      errno = 0;
      const long long bytes = std::strtoll(v, &end, 10);
      TORCH_CHECK(*end == '\0' && errno == 0 && bytes >= 0,
                  "DEFORMGAN_STREAM_MIN_BYTES must be a whole number of bytes, 0 or more, got '", v, "'");
      s.stream_min_bytes = bytes;
    }
    return s;
  }

  // Whether a transpose writes `out` (row stride ld_out_bytes; the whole output tensor
  // total_bytes) with non-temporal stores: AVX-512, whole aligned 64-byte lines, large
  // enough.
  bool stream(const void* out, int64_t ld_out_bytes, int64_t total_bytes) const {
    return isa == TransposeIsa::kAvx512 && total_bytes >= stream_min_bytes &&
           reinterpret_cast<uintptr_t>(out) % 64 == 0 && ld_out_bytes % 64 == 0;
  }
};

// Element types with AVX-512 register blocks: float32 -> float32, and bfloat16 <->
// float32 (the low-precision path converts while it transposes).
template <typename in_t, typename out_t>
constexpr bool kAvx512Transpose =
    (std::is_same_v<in_t, float> || std::is_same_v<in_t, c10::BFloat16>) && std::is_same_v<out_t, float> ||
    std::is_same_v<in_t, float> && std::is_same_v<out_t, c10::BFloat16>;

// Register blocks as wide as `how` allows (AVX-512: the kAvx512Transpose types; AVX2:
// same-type 32-bit elements), else scalar; `stream`: non-temporal stores for float32
// outputs (how.stream says when).
template <typename in_t, typename out_t>
void transpose_tile(const in_t* in, int64_t ld_in, out_t* out, int64_t ld_out, int64_t rows, int64_t cols,
                    const TransposeSettings& how, bool stream = false) {
#ifdef DEFORMGAN_AVX2_TRANSPOSE
  if constexpr (kAvx512Transpose<in_t, out_t>) {
    if (how.isa == TransposeIsa::kAvx512) {
      if constexpr (std::is_same_v<out_t, float>) {
        if (stream) {
          transpose_avx512<true>(in, ld_in, out, ld_out, rows, cols);
          return;
        }
      }
      transpose_avx512<false>(in, ld_in, out, ld_out, rows, cols);
      return;
    }
  }
  if constexpr (std::is_same_v<in_t, out_t> && sizeof(in_t) == 4) {
    if (how.isa != TransposeIsa::kScalar) {
      transpose32_avx2(reinterpret_cast<const float*>(in), ld_in, reinterpret_cast<float*>(out), ld_out, rows, cols);
      return;
    }
  }
#endif
  transpose_scalar(in, ld_in, out, ld_out, 0, rows, 0, cols);
}

// Asks for `rows` rows of `bytes` bytes, `stride` bytes apart, to be brought
// into cache: the next output row's masks, incoming gradient and winners are one
// short row in each of many planes, too many strided streams for the hardware
// prefetchers, so each row would otherwise wait on memory.
inline void prefetch_rows(const void* first, int64_t rows, int64_t stride, int64_t bytes) {
  const char* p = static_cast<const char*>(first);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t b = 0; b < bytes; b += 64) __builtin_prefetch(p + r * stride + b);
  }
}

// Output rows per block of the kernels: about 512 pixels, at least one row.
inline int64_t rows_per_block(int64_t Ho, int64_t Wo) {
  return std::max<int64_t>(1, std::min<int64_t>(Ho, 512 / std::max<int64_t>(Wo, 1)));
}

// The winners: [rows, cols] bytes (row stride ld_in) -> [cols, rows] (row stride
// ld_out), in 16 x 16 register blocks (SSE2 byte, word, dword and qword unpacks: four
// rounds of interleaving), the ragged edges scalar. Before, the winners went through
// an int32 scratch and the 32-bit transpose: 4 times the bytes, and a conversion pass
// each way (standalone, 8 items of C64 x 8192 pixels, one thread: in 1.21 -> 0.20 ms,
// out 1.16 -> 0.71 ms).
#if defined(__x86_64__)
// Rows r .. r + 15, columns c .. c + 15 of `in`: rows[q] = column c + q.
inline __attribute__((always_inline)) void transpose16x16_bytes_rows(const uint8_t* in, int64_t ld_in, int64_t r,
                                                                     int64_t c, __m128i rows[16]) {
  __m128i a[16], t[16];
  for (int i = 0; i < 16; ++i) a[i] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + (r + i) * ld_in + c));
  // t[2i], t[2i + 1]: columns 0-7 and 8-15 of rows 2i, 2i + 1, byte-interleaved.
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm_unpacklo_epi8(a[2 * i], a[2 * i + 1]);
    t[2 * i + 1] = _mm_unpackhi_epi8(a[2 * i], a[2 * i + 1]);
  }
  // a[4j + m]: columns 4m .. 4m + 3 of rows 4j .. 4j + 3.
  for (int j = 0; j < 4; ++j) {
    for (int k = 0; k < 2; ++k) {
      a[4 * j + 2 * k] = _mm_unpacklo_epi16(t[4 * j + k], t[4 * j + 2 + k]);
      a[4 * j + 2 * k + 1] = _mm_unpackhi_epi16(t[4 * j + k], t[4 * j + 2 + k]);
    }
  }
  // t[8l + q]: columns 2q, 2q + 1 of rows 8l .. 8l + 7.
  for (int l = 0; l < 2; ++l) {
    for (int m = 0; m < 4; ++m) {
      t[8 * l + 2 * m] = _mm_unpacklo_epi32(a[8 * l + m], a[8 * l + 4 + m]);
      t[8 * l + 2 * m + 1] = _mm_unpackhi_epi32(a[8 * l + m], a[8 * l + 4 + m]);
    }
  }
  // Column 2q (2q + 1) of all 16 rows.
  for (int q = 0; q < 8; ++q) {
    rows[2 * q] = _mm_unpacklo_epi64(t[q], t[8 + q]);
    rows[2 * q + 1] = _mm_unpackhi_epi64(t[q], t[8 + q]);
  }
}

inline void transpose16x16_bytes(const uint8_t* in, int64_t ld_in, uint8_t* out, int64_t ld_out, int64_t r,
                                 int64_t c) {
  __m128i rows[16];
  transpose16x16_bytes_rows(in, ld_in, r, c, rows);
  for (int q = 0; q < 16; ++q) _mm_storeu_si128(reinterpret_cast<__m128i*>(out + (c + q) * ld_out + r), rows[q]);
}
#endif

inline void transpose_bytes(const uint8_t* in, int64_t ld_in, uint8_t* out, int64_t ld_out, int64_t rows,
                            int64_t cols) {
  int64_t R = 0, Cb = 0;
#if defined(__x86_64__)
  R = rows / 16 * 16;
  Cb = cols / 16 * 16;
  for (int64_t r = 0; r < R; r += 16) {
    for (int64_t c = 0; c < Cb; c += 16) transpose16x16_bytes(in, ld_in, out, ld_out, r, c);
  }
#endif
  transpose_scalar(in, ld_in, out, ld_out, R, rows, 0, cols);  // the last rows % 16 rows
  transpose_scalar(in, ld_in, out, ld_out, 0, R, Cb, cols);    // the last cols % 16 columns
}

#ifdef DEFORMGAN_AVX2_TRANSPOSE
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC bug 105593, as above
// transpose_bytes with non-temporal stores (TransposeSettings::stream): four 16 x 16
// blocks side by side make one whole 64-byte line of each of 16 output rows. The last
// rows % 64 rows go through transpose_bytes.
__attribute__((target("avx512f"))) void transpose_bytes_stream(const uint8_t* in, int64_t ld_in, uint8_t* out,
                                                               int64_t ld_out, int64_t rows, int64_t cols) {
  const int64_t R = rows / 64 * 64, Cb = cols / 16 * 16;
  for (int64_t r = 0; r < R; r += 64) {
    for (int64_t c = 0; c < Cb; c += 16) {
      __m128i q0[16], q1[16], q2[16], q3[16];
      transpose16x16_bytes_rows(in, ld_in, r, c, q0);
      transpose16x16_bytes_rows(in, ld_in, r + 16, c, q1);
      transpose16x16_bytes_rows(in, ld_in, r + 32, c, q2);
      transpose16x16_bytes_rows(in, ld_in, r + 48, c, q3);
      for (int q = 0; q < 16; ++q) {
        __m512i line = _mm512_castsi128_si512(q0[q]);
        line = _mm512_inserti32x4(line, q1[q], 1);
        line = _mm512_inserti32x4(line, q2[q], 2);
        line = _mm512_inserti32x4(line, q3[q], 3);
        _mm512_stream_si512(reinterpret_cast<__m512i*>(out + (c + q) * ld_out + r), line);
      }
    }
  }
  _mm_sfence();
  transpose_scalar(in, ld_in, out, ld_out, 0, R, Cb, cols);                          // the last cols % 16 columns
  transpose_bytes(in + R * ld_in, ld_in, out + R, ld_out, rows - R, cols);  // the last rows % 64 rows
}
#pragma GCC diagnostic pop
#endif

// transpose_bytes, streamed where `stream` (TransposeSettings::stream) says.
inline void transpose_bytes(const uint8_t* in, int64_t ld_in, uint8_t* out, int64_t ld_out, int64_t rows,
                            int64_t cols, bool stream) {
#ifdef DEFORMGAN_AVX2_TRANSPOSE
  if (stream) {
    transpose_bytes_stream(in, ld_in, out, ld_out, rows, cols);
    return;
  }
#endif
  transpose_bytes(in, ld_in, out, ld_out, rows, cols);
}

// The features of one batch item as [H, W, C] rows in the accumulation type. Features
// that are channels-last already in that type are used in place; otherwise they go
// into a buffer a task owns and reuses: a task converts each batch item it touches
// once (the first time one of its rows needs it), and the rows it then samples are
// the ones it has just written, still in its own cache. (Two tasks whose ranges
// share a batch item both convert it.)
template <typename acc_t>
class ChannelsLastItem {
 public:
  ChannelsLastItem(int64_t C, int64_t HW, bool channels_last, const TransposeSettings& how)
      : C_(C), HW_(HW), channels_last_(channels_last), how_(how) {}

  template <typename scalar_t>
  const acc_t* of(const scalar_t* features, int64_t n) {
    const scalar_t* f = features + n * C_ * HW_;
    if (channels_last_ && std::is_same<scalar_t, acc_t>::value) return reinterpret_cast<const acc_t*>(f);
    if (n != n_) {
      if (!rows_) rows_.reset(new acc_t[C_ * HW_]);  // not zeroed
      if (channels_last_) {
        convert_run(f, rows_.get(), C_ * HW_);
      } else {
        constexpr int64_t kChunk = 512;  // pixels per block: [C, 512] in, [512, C] out
        for (int64_t p0 = 0; p0 < HW_; p0 += kChunk) {
          transpose_tile(f + p0, HW_, rows_.get() + p0 * C_, C_, C_, std::min(kChunk, HW_ - p0), how_);
        }
      }
      n_ = n;
    }
    return rows_.get();
  }

 private:
  int64_t C_, HW_, n_ = -1;
  bool channels_last_;
  const TransposeSettings& how_;
  std::unique_ptr<acc_t[]> rows_;
};

// theta, masks or offsets in the accumulation type of features (float32 for
// float16/bfloat16 features, else the features' dtype), contiguous.
at::Tensor warp_companion(const at::Tensor& t, const at::Tensor& features) {
  return t.to(at::toOpMathType(features.scalar_type())).contiguous();
}

// The first corner row pointers of a sample: outside corners get `outside`.
template <typename T, typename acc_t>
inline void corner_rows(T* base, int64_t C, const BilinearTaps<acc_t>& t, T* outside, T* rows[4]) {
  for (int k = 0; k < 4; ++k) rows[k] = t.in[k] ? base + t.idx[k] * C : outside;
}

// One batch item's inputs as the forward's row function reads them.
template <typename acc_t>
struct WarpItem {
  const acc_t* theta;     // [P, 6]
  const acc_t* masks;     // [P, Ho, Wo]
  const acc_t* offsets;   // [2, Ho, Wo], or nullptr
  const acc_t* features;  // [H, W, C] rows
  const acc_t* zeros;     // C zeros: the row of a corner outside the image
  int64_t P, H, W, Wo, C, plane, words;
};

// Output row y of one batch item: best / best_p are its [Wo, C] tile rows (best_p:
// the winners, see warp_pixel); nonzero is the row's nonzero-part
// bitmask, cands a scratch of P candidates. Cloned so that the per-pixel location
// math (floor, conversions) uses the machine's instructions.
template <typename acc_t>
DEFORMGAN_CPU_CLONES_AVX512 void warp_row(const WarpItem<acc_t>& a, int64_t y, const uint64_t* nonzero,
                                          WarpCandidate<acc_t>* cands, acc_t* best, uint8_t* best_p) {
  const auto pixel = a.C % 64 == 0 ? &warp_pixel_c64<acc_t> : &warp_pixel<acc_t>;
  for (int64_t x = 0; x < a.Wo; ++x) {
    acc_t du = 0, dv = 0;
    if (a.offsets != nullptr) {
      du = a.offsets[y * a.Wo + x];
      dv = a.offsets[a.plane + y * a.Wo + x];
    }
    // The parts that can win, in increasing p:
    //  - every sampled part with a nonzero mask (candidate mask * sample);
    //  - the first part whose candidate is exactly zero (zero mask, or a
    //    finite mask at a location with no corner inside); later zero
    //    candidates tie with it;
    //  - a non-finite mask at a location with no corner inside: its
    //    candidate mask * 0 is NaN, which wins, so no later part counts.
    // With P >= 1 (checked) every pixel has at least one of these.
    int count = 0;
    bool have_zero = false;
    PartsToVisit parts(nonzero + x * a.words, a.words, a.P);
    int64_t p;
    bool zero_mask;
    while (parts.next(p, zero_mask)) {
      WarpCandidate<acc_t>& e = cands[count];
      e.part = static_cast<int32_t>(p);
      if (!zero_mask) {
        e.mask = a.masks[p * a.plane + y * a.Wo + x];
        e.t = location_taps(a.theta + p * 6, static_cast<acc_t>(x), static_cast<acc_t>(y), du, dv, a.H, a.W);
        if (e.t.in[0] || e.t.in[1] || e.t.in[2] || e.t.in[3]) {
          e.sampled = true;
          corner_rows(a.features, a.C, e.t, a.zeros, e.r);
          ++count;
          continue;
        }
      }
      // Not sampled: the candidate is exactly 0 for a zero mask, else mask * 0.
      e.sampled = false;
      e.constant = zero_mask ? acc_t(0) : e.mask * acc_t(0);
      if (e.constant == acc_t(0)) {
        if (have_zero) continue;
        have_zero = true;
        ++count;
        continue;
      }
      ++count;  // NaN: it wins, and no later part can replace it
      break;
    }
    pixel(best + x * a.C, best_p + x * a.C, cands, count, a.C);
  }
}

std::tuple<at::Tensor, at::Tensor> part_affine_warp_cpu(const at::Tensor& features_in,
                                                        const at::Tensor& theta_in,
                                                        const at::Tensor& masks_in,
                                                        const c10::optional<at::Tensor>& offsets_in) {
  check_part_affine_warp_inputs(features_in, theta_in, masks_in, offsets_in);
  TORCH_CHECK(features_in.device().is_cpu(), "features must be a CPU tensor for the cpu kernel");
  const TransposeSettings how = TransposeSettings::from_environment();
  const at::Tensor theta = warp_companion(theta_in, features_in);
  const at::Tensor masks = warp_companion(masks_in, features_in);
  const bool has_offsets = offsets_in.has_value() && offsets_in->defined();
  const at::Tensor offsets = has_offsets ? warp_companion(*offsets_in, features_in) : at::Tensor();

  const int64_t N = features_in.size(0), C = features_in.size(1), H = features_in.size(2),
                W = features_in.size(3);
  const int64_t P = theta.size(1), Ho = masks.size(2), Wo = masks.size(3);
  // Channels-last features give a channels-last output and winners: the kernel then
  // reads and writes [pixels, C] rows in place, with no transposes.
  const at::MemoryFormat layout = warp_layout(features_in);
  const bool channels_last = layout == at::MemoryFormat::ChannelsLast;
  at::Tensor output = at::empty({N, C, Ho, Wo}, features_in.options().memory_format(layout));
  at::Tensor winner = at::empty({N, C, Ho, Wo}, features_in.options().dtype(at::kByte).memory_format(layout));
  if (output.numel() == 0) return {output, winner};
  const at::Tensor features = features_in.contiguous(layout);

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, features_in.scalar_type(), "part_affine_warp_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* feat = features.data_ptr<scalar_t>();
    const acc_t* th = theta.data_ptr<acc_t>();
    const acc_t* mk = masks.data_ptr<acc_t>();
    const acc_t* off = has_offsets ? offsets.data_ptr<acc_t>() : nullptr;
    scalar_t* out = output.data_ptr<scalar_t>();
    uint8_t* win = winner.data_ptr<uint8_t>();
    const int64_t plane_o = Ho * Wo;
    // One task per block of R output rows of one batch item (about 512 pixels):
    // the block's [R * Wo, C] result is transposed out as one run of R * Wo
    // pixels in each output plane, long enough for the hardware prefetchers.
    const int64_t R = rows_per_block(Ho, Wo), blocks = (Ho + R - 1) / R;
    const int64_t words = (P + 63) / 64;  // of the nonzero-part bitmask of a pixel
    // Channels-last output in the accumulation type: the block's rows are the tile.
    const bool in_place = channels_last && std::is_same<scalar_t, acc_t>::value;
    at::parallel_for(0, N * blocks, 1, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> best(in_place ? 0 : R * Wo * C), zeros(C, acc_t(0));
      // Channels-last winners are written in place; contiguous ones go through a
      // [pixels, C] tile and the byte transpose.
      std::vector<uint8_t> best_p(channels_last ? 0 : R * Wo * C);
      ChannelsLastItem<acc_t> rows(C, H * W, channels_last, how);
      std::vector<uint64_t> nonzero(Wo * words);
      std::vector<WarpCandidate<acc_t>> cands(P);
      for (int64_t block = begin; block < end; ++block) {
        const int64_t n = block / blocks, y0 = (block % blocks) * R, y1 = std::min(Ho, y0 + R);
        // the block's first pixel: element at * C of channels-last [N, Ho, Wo, C], or
        // the start of a run of pixels in each plane of [N, C, Ho, Wo]
        const int64_t at = channels_last ? n * plane_o + y0 * Wo : n * C * plane_o + y0 * Wo;
        const int64_t pixels = (y1 - y0) * Wo;
        acc_t* tile = in_place ? reinterpret_cast<acc_t*>(out) + at * C : best.data();
        const acc_t* th_n = th + n * P * 6;
        const acc_t* mk_n = mk + n * P * plane_o;
        const WarpItem<acc_t> item{th_n, mk_n, off != nullptr ? off + n * 2 * plane_o : nullptr,
                                   rows.of(feat, n), zeros.data(), P, H, W, Wo, C, plane_o, words};
        for (int64_t y = y0; y < y1; ++y) {
          if (y + 1 < y1) prefetch_rows(mk_n + (y + 1) * Wo, P, plane_o * sizeof(acc_t), Wo * sizeof(acc_t));
          nonzero_parts(mk_n + y * Wo, plane_o, P, Wo, words, nonzero.data());
          const int64_t at_y = (y - y0) * Wo * C;
          uint8_t* win_rows = channels_last ? win + at * C : best_p.data();  // in place, or the tile
          warp_row(item, y, nonzero.data(), cands.data(), tile + at_y, win_rows + at_y);
        }
        if (channels_last) {
          if (!in_place) convert_run(best.data(), out + at * C, pixels * C);
        } else {
          transpose_tile(best.data(), C, out + at, plane_o, pixels, C, how,
                         how.stream(out + at, plane_o * sizeof(scalar_t), output.nbytes()));
          transpose_bytes(best_p.data(), C, win + at, plane_o, pixels, C,
                          how.stream(win + at, plane_o, winner.nbytes()));
        }
      }
    });
  });
  return {output, winner};
}

// One batch item's inputs and feature gradient as the backward's row function uses them.
template <typename acc_t>
struct WarpBackwardItem {
  const acc_t* theta;     // [P, 6]
  const acc_t* masks;     // [P, Ho, Wo]
  const acc_t* offsets;   // [2, Ho, Wo], or nullptr
  const acc_t* features;  // [H, W, C] rows, or nullptr when no sample is needed
  acc_t* grad_features;   // [H, W, C] rows, or nullptr when not asked for
  acc_t* scratch;         // C values: the row a corner outside the image scatters into
  int64_t P, H, W, Wo, C, plane, words;
  bool need_masks, need_location;
};

// Output row y of one batch item: go / win are the row's [Wo, C] incoming gradient
// and winners; scatters into grad_features and sums, per part and pixel (index
// p * Wo + x), d loss / d mask and d loss / d (u, v) into gmask, gu and gv. Inlined
// into warp_backward_row (any C) and warp_backward_row_c64 (C a multiple of 64, with an
// AVX-512 clone: cpu_utils.h).
template <typename acc_t>
DEFORMGAN_ALWAYS_INLINE void warp_backward_row_body(const WarpBackwardItem<acc_t>& a, int64_t y,
                                                    const uint64_t* nonzero, const acc_t* go, const uint8_t* win,
                                                    acc_t* gmask_row, acc_t* gu_row, acc_t* gv_row) {
  const int64_t C = a.C, Wo = a.Wo;
  const bool need_samples = a.need_masks || a.need_location;
  for (int64_t x = 0; x < Wo; ++x) {
    const acc_t* go_x = go + x * C;
    const uint8_t* win_x = win + x * C;
    acc_t du = 0, dv = 0;
    if (a.offsets != nullptr) {
      du = a.offsets[y * Wo + x];
      dv = a.offsets[a.plane + y * Wo + x];
    }
    // The parts the forward may have chosen: every part with a nonzero mask, and
    // the first part whose candidate is exactly zero, which is sampled too (when it
    // wins with a zero mask, d out / d mask is its sample). Parts that were not
    // sampled (no corner inside) have all-zero taps: nothing is read or scattered
    // for them. A zero-mask part's candidate does not depend on its sample: with
    // only grad_features asked for, it contributes nothing.
    bool have_zero = false;
    PartsToVisit parts(nonzero + x * a.words, a.words, a.P);
    int64_t p;
    bool zero_mask;
    while (parts.next(p, zero_mask)) {
      if (zero_mask && (have_zero || !need_samples)) continue;
      const acc_t mv = a.masks[p * a.plane + y * Wo + x];
      const BilinearTaps<acc_t> t = location_taps(a.theta + p * 6, static_cast<acc_t>(x), static_cast<acc_t>(y),
                                                  du, dv, a.H, a.W);
      const bool any = t.in[0] || t.in[1] || t.in[2] || t.in[3];
      if (mv == acc_t(0) || !any) have_zero = true;
      const uint8_t part = static_cast<uint8_t>(p);
      // The candidate of a zero-mask part does not depend on the sample.
      if (a.grad_features != nullptr && any && mv != acc_t(0)) {
        acc_t* g[4];
        corner_rows(a.grad_features, C, t, a.scratch, g);
        scatter_winner_grad(g[0], g[1], g[2], g[3], go_x, win_x, t, mv, part, C);
      }
      if (!need_samples) continue;
      const int64_t i = p * Wo + x;
      acc_t gmask = gmask_row[i], gu = gu_row[i], gv = gv_row[i];
      for (int64_t c = 0; c < C; ++c) {
        if (win_x[c] != part) continue;
        const acc_t g = go_x[c];
        acc_t f[4];
        taps_load(a.features + c, t, f, C);  // channel c of the [H, W, C] rows
        if (a.need_masks) gmask += g * mask_grad_sample(mv, taps_dot(t.w, f));
        const acc_t gm = mv == acc_t(0) ? acc_t(0) : g * mv;
        // No corner inside: the sample is 0 whatever the location, so the location
        // gradient is exactly 0, even under a non-finite mask (not NaN = inf * 0).
        if (a.need_location && any) {
          gu += gm * taps_dot(t.du, f);
          gv += gm * taps_dot(t.dv, f);
        }
      }
      gmask_row[i] = gmask;
      gu_row[i] = gu;
      gv_row[i] = gv;
    }
  }
}

template <typename acc_t>
DEFORMGAN_CPU_CLONES void warp_backward_row(const WarpBackwardItem<acc_t>& a, int64_t y, const uint64_t* nonzero,
                                            const acc_t* go, const uint8_t* win, acc_t* gmask_row, acc_t* gu_row,
                                            acc_t* gv_row) {
  warp_backward_row_body(a, y, nonzero, go, win, gmask_row, gu_row, gv_row);
}

template <typename acc_t>
DEFORMGAN_CPU_CLONES_AVX512 void warp_backward_row_c64(const WarpBackwardItem<acc_t>& a, int64_t y,
                                                       const uint64_t* nonzero, const acc_t* go, const uint8_t* win,
                                                       acc_t* gmask_row, acc_t* gu_row, acc_t* gv_row) {
  warp_backward_row_body(a, y, nonzero, go, win, gmask_row, gu_row, gv_row);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> part_affine_warp_backward_cpu(
    const at::Tensor& grad_output_in, const at::Tensor& features_in, const at::Tensor& theta_in,
    const at::Tensor& masks_in, const c10::optional<at::Tensor>& offsets_in,
    const at::Tensor& winner_in, std::array<bool, 4> output_mask) {
  check_part_affine_warp_backward_inputs(grad_output_in, features_in, theta_in, masks_in, offsets_in, winner_in);
  const TransposeSettings how = TransposeSettings::from_environment();
  const int64_t N = features_in.size(0), C = features_in.size(1), H = features_in.size(2),
                W = features_in.size(3);
  const int64_t P = theta_in.size(1), Ho = masks_in.size(2), Wo = masks_in.size(3);
  // The layout of the features decides (as in the forward) how the incoming gradient,
  // the winners and the feature gradient are laid out here.
  const at::MemoryFormat layout = warp_layout(features_in);
  const bool channels_last = layout == at::MemoryFormat::ChannelsLast;
  const at::Tensor grad_output = grad_output_in.to(features_in.scalar_type()).contiguous(layout);
  const at::Tensor theta = warp_companion(theta_in, features_in);
  const at::Tensor masks = warp_companion(masks_in, features_in);
  const at::Tensor winner = winner_in.contiguous(layout);
  const bool has_offsets = offsets_in.has_value() && offsets_in->defined();
  const at::Tensor offsets = has_offsets ? warp_companion(*offsets_in, features_in) : at::Tensor();

  const bool need_features = output_mask[0], need_theta = output_mask[1],
             need_masks = output_mask[2], need_offsets = output_mask[3] && has_offsets;
  const bool need_location = need_theta || need_offsets;
  // The samples themselves are needed only for the location and mask gradients.
  const bool need_samples = need_location || need_masks;
  const auto none = [&] { return at::empty({0}, features_in.options()); };
  const at::Tensor features = need_samples ? features_in.contiguous(layout) : at::Tensor();
  // Every gradient is computed in the accumulation type (theta's, masks' and
  // offsets' here) and returned in its input's dtype: grad_features is
  // accumulated channels-last per batch item ([H, W, C], in the task that owns
  // it; in place for channels-last features in the accumulation type) and
  // written into place; every element of the others is written below.
  at::Tensor grad_features =
      need_features ? at::empty(features_in.sizes(), features_in.options().memory_format(layout)) : none();
  at::Tensor grad_theta = need_theta ? at::empty(theta.sizes(), theta.options()) : none();
  at::Tensor grad_masks = need_masks ? at::empty(masks.sizes(), masks.options()) : none();
  at::Tensor grad_offsets = need_offsets ? at::empty(offsets.sizes(), offsets.options()) : none();
  const auto result = [&] {
    const auto in_dtype = [&](const at::Tensor& grad, const at::Tensor& input, bool needed) {
      return needed ? grad.to(input.scalar_type()) : grad;
    };
    return std::make_tuple(grad_features, in_dtype(grad_theta, theta_in, need_theta),
                           in_dtype(grad_masks, masks_in, need_masks),
                           in_dtype(grad_offsets, need_offsets ? *offsets_in : features_in, need_offsets));
  };
  if (N == 0) return result();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, features_in.scalar_type(), "part_affine_warp_backward_cpu",
                                  [&] {
    using acc_t = at::opmath_type<scalar_t>;
    using sum_t = at::acc_type<acc_t, /*is_cuda=*/false>;
    const scalar_t* feat = need_samples ? features.data_ptr<scalar_t>() : nullptr;
    const acc_t* th = theta.data_ptr<acc_t>();
    const acc_t* mk = masks.data_ptr<acc_t>();
    const acc_t* off = has_offsets ? offsets.data_ptr<acc_t>() : nullptr;
    const scalar_t* go = grad_output.data_ptr<scalar_t>();
    const uint8_t* win = winner.data_ptr<uint8_t>();
    scalar_t* gfeat = need_features ? grad_features.data_ptr<scalar_t>() : nullptr;
    acc_t* gth = need_theta ? grad_theta.data_ptr<acc_t>() : nullptr;
    acc_t* gmk = need_masks ? grad_masks.data_ptr<acc_t>() : nullptr;
    acc_t* goff = need_offsets ? grad_offsets.data_ptr<acc_t>() : nullptr;
    const int64_t plane_o = Ho * Wo;
    const int64_t R = rows_per_block(Ho, Wo);
    const int64_t words = (P + 63) / 64;  // of the nonzero-part bitmask of a pixel
    // Channels-last tensors in the accumulation type are read and written in place.
    const bool in_place = channels_last && std::is_same<scalar_t, acc_t>::value;
    const auto row = C % 64 == 0 ? &warp_backward_row_c64<acc_t> : &warp_backward_row<acc_t>;  // see cpu_utils.h
    // Parallel over the batch: each task owns grad_features[n], grad_theta[n],
    // grad_masks[n] and grad_offsets[n], so no atomics are needed.
    at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> go_tile(in_place ? 0 : R * Wo * C), scratch(C);
      // Channels-last winners are read in place; contiguous ones through a [pixels, C]
      // tile (the byte transpose).
      std::vector<uint8_t> win_tile(channels_last ? 0 : R * Wo * C);
      std::vector<acc_t> grad_rows(need_features && !in_place ? H * W * C : 0);
      ChannelsLastItem<acc_t> feat_rows(need_samples ? C : 0, H * W, channels_last, how);
      // Per-row sums over channels, indexed p * Wo + x.
      std::vector<acc_t> gmask_row(P * Wo), gu_row(P * Wo), gv_row(P * Wo);
      std::vector<sum_t> theta_acc(P * 6);
      std::vector<uint64_t> nonzero(Wo * words);
      for (int64_t n = begin; n < end; ++n) {
        std::fill(theta_acc.begin(), theta_acc.end(), sum_t(0));
        const acc_t* th_n = th + n * P * 6;
        const acc_t* mk_n = mk + n * P * plane_o;
        const acc_t* feat_n = need_samples ? feat_rows.of(feat, n) : nullptr;
        acc_t* gfeat_n = in_place && need_features ? reinterpret_cast<acc_t*>(gfeat) + n * H * W * C : grad_rows.data();
        if (need_features) std::fill(gfeat_n, gfeat_n + H * W * C, acc_t(0));
        const WarpBackwardItem<acc_t> item{th_n, mk_n, off != nullptr ? off + n * 2 * plane_o : nullptr, feat_n,
                                           need_features ? gfeat_n : nullptr, scratch.data(), P, H, W, Wo, C,
                                           plane_o, words, need_masks, need_location};
        int64_t y0 = 0;  // the first row of the block in go_block and win_tile
        const acc_t* go_block = go_tile.data();
        const uint8_t* win_block = win_tile.data();  // the block's winners: the tile, or in place (channels-last)
        for (int64_t y = 0; y < Ho; ++y) {
          if (y % R == 0) {  // the incoming gradient and winners of rows y .. y + R - 1
            y0 = y;
            const int64_t pixels = (std::min(Ho, y + R) - y) * Wo;
            if (channels_last) {
              const int64_t at = (n * plane_o + y * Wo) * C;
              if (in_place) {
                go_block = reinterpret_cast<const acc_t*>(go) + at;
              } else {
                convert_run(go + at, go_tile.data(), pixels * C);
              }
              win_block = win + at;
            } else {
              const int64_t at = n * C * plane_o + y * Wo;
              transpose_tile(go + at, plane_o, go_tile.data(), C, C, pixels, how);
              transpose_bytes(win + at, plane_o, win_tile.data(), C, C, pixels);
            }
          }
          if (y + 1 < Ho) prefetch_rows(mk_n + (y + 1) * Wo, P, plane_o * sizeof(acc_t), Wo * sizeof(acc_t));
          std::fill(gmask_row.begin(), gmask_row.end(), acc_t(0));
          std::fill(gu_row.begin(), gu_row.end(), acc_t(0));
          std::fill(gv_row.begin(), gv_row.end(), acc_t(0));
          nonzero_parts(mk_n + y * Wo, plane_o, P, Wo, words, nonzero.data());
          row(item, y, nonzero.data(), go_block + (y - y0) * Wo * C, win_block + (y - y0) * Wo * C, gmask_row.data(),
              gu_row.data(), gv_row.data());
          if (gmk != nullptr) {
            acc_t* gmk_row = gmk + n * P * plane_o + y * Wo;
            for (int64_t p = 0; p < P; ++p) {
              for (int64_t x = 0; x < Wo; ++x) gmk_row[p * plane_o + x] = gmask_row[p * Wo + x];
            }
          }
          if (gth != nullptr) {
            for (int64_t p = 0; p < P; ++p) {
              sum_t* ta = theta_acc.data() + p * 6;
              for (int64_t x = 0; x < Wo; ++x) {
                const sum_t gu = gu_row[p * Wo + x], gv = gv_row[p * Wo + x];
                ta[0] += gu * x;
                ta[1] += gu * y;
                ta[2] += gu;
                ta[3] += gv * x;
                ta[4] += gv * y;
                ta[5] += gv;
              }
            }
          }
          if (goff != nullptr) {
            acc_t* goff_n = goff + n * 2 * plane_o + y * Wo;
            for (int64_t x = 0; x < Wo; ++x) {
              sum_t su = 0, sv = 0;
              for (int64_t p = 0; p < P; ++p) {
                su += gu_row[p * Wo + x];
                sv += gv_row[p * Wo + x];
              }
              goff_n[x] = static_cast<acc_t>(su);
              goff_n[plane_o + x] = static_cast<acc_t>(sv);
            }
          }
        }
        if (gth != nullptr) {
          for (int64_t i = 0; i < P * 6; ++i) gth[n * P * 6 + i] = static_cast<acc_t>(theta_acc[i]);
        }
        // [H, W, C] -> grad_features[n] in the features' layout and dtype.
        if (need_features && channels_last && !in_place) {
          convert_run(static_cast<const acc_t*>(gfeat_n), gfeat + n * H * W * C, H * W * C);
        } else if (need_features && !channels_last) {
          scalar_t* gfeat_item = gfeat + n * C * H * W;
          transpose_tile(gfeat_n, C, gfeat_item, H * W, H * W, C, how,
                         how.stream(gfeat_item, H * W * sizeof(scalar_t), grad_features.nbytes()));
        }
      }
    });
  });
  return result();
}

}  // namespace

TORCH_LIBRARY_IMPL(deformgan_ops, CPU, m) {
  m.impl("part_affine_warp", &part_affine_warp_cpu);
  m.impl("_part_affine_warp_backward", &part_affine_warp_backward_cpu);
}

}  // namespace deformgan_ops

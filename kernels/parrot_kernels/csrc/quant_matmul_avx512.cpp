// The AVX-512 row kernels of quant_matmul.cpp (same layout and arithmetic as its AVX2 ones, on
// vectors of sixteen), compiled for AVX-512 only in the functions marked so; called only where
// the CPU has it.

#include <immintrin.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "quant_blocks.h"

namespace parrot::quant {

namespace {

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,f16c,fma")))

// One block's quantised values (not yet scaled) as two vectors of sixteen.
template <int64_t Q>
AVX512 inline void values_avx512(const uint8_t* p, __m512& lo, __m512& hi) {
  if constexpr (Q == Q8_0) {
    lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
    hi = _mm512_cvtepi32_ps(
        _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16))));
  } else {
    const __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    lo = _mm512_cvtepi32_ps(_mm512_and_si512(q, _mm512_set1_epi32(0x0F)));
    hi = _mm512_cvtepi32_ps(_mm512_srli_epi32(q, 4));
  }
}

// A row's scales sixteen at a time.
AVX512 void scales_avx512(int64_t qtype, const RowLayout& L, const uint8_t* row, RowScales& s) {
  const uint16_t* d16 = reinterpret_cast<const uint16_t*>(row);
  for (int64_t b = 0; b < L.nb; b += 16) {
    const __mmask16 k = L.nb - b >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << (L.nb - b)) - 1);
    const __m512 d = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, d16 + b));
    _mm512_storeu_ps(&s.d[b], d);
    __m512 m = _mm512_setzero_ps();
    if (L.offsets)
      m = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, d16 + L.nb + b));
    else if (qtype == Q4_0)
      m = _mm512_mul_ps(d, _mm512_set1_ps(-8.0f));
    _mm512_storeu_ps(&s.m[b], m);
  }
}

// The offsets' share of one dot, sum over blocks of m[b] * sx[b], as a vector to add.
AVX512 __m512 offsets_dot_avx512(const float* m, const float* sx, int64_t nb) {
  __m512 acc = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; b += 16) {
    const __mmask16 k = nb - b >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << (nb - b)) - 1);
    acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, m + b), _mm512_maskz_loadu_ps(k, sx + b), acc);
  }
  return acc;
}

template <int64_t Q, int NR>
AVX512 void dot_rows_avx512(const Job& J, const RowScales& s, int64_t r, int64_t i0) {
  constexpr int64_t kValueBytes = Q == Q8_0 ? 32 : 16;
  const int64_t nb = J.L.nb, k = J.k;
  const float* x = J.x + i0 * k;
  const float* d_of = s.d.data();
  const float* m_of = s.m.data();
  const uint8_t* vals = J.w + r * J.L.row_bytes + J.L.values_at;
  __m512 acc[NR][2];
  for (int i = 0; i < NR; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  __m512 lo, hi;
  for (int64_t b = 0; b < nb; ++b) {
    _mm_prefetch(reinterpret_cast<const char*>(vals + b * kValueBytes + kPrefetchBytes), _MM_HINT_T0);
    values_avx512<Q>(vals + b * kValueBytes, lo, hi);
    const __m512 d = _mm512_set1_ps(d_of[b]);
    if constexpr (NR <= 2) {
      for (int i = 0; i < NR; ++i) {
        const float* xb = x + i * k + b * kBlock;
        __m512 t = _mm512_mul_ps(lo, _mm512_loadu_ps(xb));
        t = _mm512_fmadd_ps(hi, _mm512_loadu_ps(xb + 16), t);
        // Alternate accumulators (swapping registers, not indexing by b, which would
        // put them in memory) so consecutive blocks do not wait on one another.
        acc[i][0] = _mm512_fmadd_ps(t, d, acc[i][0]);
        std::swap(acc[i][0], acc[i][1]);
      }
    } else {
      const __m512 m = _mm512_set1_ps(m_of[b]);
      lo = _mm512_fmadd_ps(lo, d, m);
      hi = _mm512_fmadd_ps(hi, d, m);
      for (int i = 0; i < NR; ++i) {
        const float* xb = x + i * k + b * kBlock;
        acc[i][0] = _mm512_fmadd_ps(lo, _mm512_loadu_ps(xb), acc[i][0]);
        acc[i][1] = _mm512_fmadd_ps(hi, _mm512_loadu_ps(xb + 16), acc[i][1]);
      }
    }
  }
  for (int i = 0; i < NR; ++i) {
    __m512 sum = _mm512_add_ps(acc[i][0], acc[i][1]);
    if (NR <= 2 && Q != Q8_0) sum = _mm512_add_ps(sum, offsets_dot_avx512(m_of, J.sx + (i0 + i) * nb, nb));
    J.out[(i0 + i) * J.m + r] = _mm512_reduce_add_ps(sum);
  }
}

// One block's quantised values (not yet scaled) as 32 16-bit integers, in x's order: Q4's
// sixteen bytes widened twice, the low nibbles kept in the first half, the high in the second.
template <int64_t Q>
AVX512 inline __m512i values_i16_avx512(const uint8_t* p) {
  if constexpr (Q == Q8_0) {
    return _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  } else {
    const __m512i twice = _mm512_cvtepu8_epi16(
        _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
    // A byte's high nibble is the byte shifted right by four: no mask needed in that half.
    return _mm512_mask_srli_epi16(_mm512_and_si512(twice, _mm512_set1_epi16(0x0F)), 0xFFFF0000,
                                  twice, 4);
  }
}

// Row r of w against the NR (at most kIntRows) rows of x in 16-bit integers: per block the
// integer dot of q and xq (vpmaddwd, exact), scaled by d * xs; the offsets' share from x's
// float block sums. Fewer vector operations per block than converting q to floats. The row's
// scales go straight from halves to d * xs (`ds`, NR * (nb + 16) floats of scratch) and to the
// offsets' sums, not through RowScales: at decode's row lengths the per-row work counts.
template <int64_t Q, int NR>
AVX512 void int_dot_rows_avx512(const Job& J, float* ds, int64_t r) {
  constexpr int64_t kValueBytes = Q == Q8_0 ? 32 : 16;
  const int64_t nb = J.L.nb, k = J.k, stride = nb + 16;
  const uint8_t* row = J.w + r * J.L.row_bytes;
  const uint16_t* d16 = reinterpret_cast<const uint16_t*>(row);
  __m512 acc[NR][2], offsets[NR];
  for (int i = 0; i < NR; ++i) acc[i][0] = acc[i][1] = offsets[i] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; b += 16) {
    const __mmask16 m = nb - b >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << (nb - b)) - 1);
    const __m512 d = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, d16 + b));
    __m512 off = _mm512_setzero_ps();
    if constexpr (Q == Q4_1) off = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, d16 + nb + b));
    else if constexpr (Q == Q4_0) off = _mm512_mul_ps(d, _mm512_set1_ps(-8.0f));
    for (int i = 0; i < NR; ++i) {
      _mm512_storeu_ps(ds + i * stride + b,
                       _mm512_mul_ps(d, _mm512_maskz_loadu_ps(m, J.xs + i * nb + b)));
      if constexpr (Q != Q8_0)
        offsets[i] = _mm512_fmadd_ps(off, _mm512_maskz_loadu_ps(m, J.sx + i * nb + b), offsets[i]);
    }
  }
  const uint8_t* vals = row + J.L.values_at;
  for (int64_t b = 0; b < nb; ++b) {
    _mm_prefetch(reinterpret_cast<const char*>(vals + b * kValueBytes + kPrefetchBytes), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(vals + b * kValueBytes + kFarPrefetchBytes), _MM_HINT_T1);
    const __m512i q = values_i16_avx512<Q>(vals + b * kValueBytes);
    for (int i = 0; i < NR; ++i) {
      const __m512i dot = _mm512_madd_epi16(q, _mm512_loadu_si512(J.xq + i * k + b * kBlock));
      acc[i][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_set1_ps(ds[i * stride + b]),
                                  acc[i][0]);
      std::swap(acc[i][0], acc[i][1]);  // as in dot_rows_avx512
    }
  }
  for (int i = 0; i < NR; ++i)
    J.out[i * J.m + r] =
        _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[i][0], acc[i][1]), offsets[i]));
}

// The rows of x from i0 (fewer than eight) against weight row r.
template <int64_t Q>
AVX512 void tail_avx512(const Job& J, const RowScales& s, int64_t r, int64_t i0) {
  switch (J.n - i0) {
    case 7: dot_rows_avx512<Q, 7>(J, s, r, i0); break;
    case 6: dot_rows_avx512<Q, 6>(J, s, r, i0); break;
    case 5: dot_rows_avx512<Q, 5>(J, s, r, i0); break;
    case 4: dot_rows_avx512<Q, 4>(J, s, r, i0); break;
    case 3: dot_rows_avx512<Q, 3>(J, s, r, i0); break;
    case 2: dot_rows_avx512<Q, 2>(J, s, r, i0); break;
    case 1: dot_rows_avx512<Q, 1>(J, s, r, i0); break;
    default: break;
  }
}

// Eight rows of x per pass (sixteen accumulators fit in AVX-512's 32 registers), so a batch
// dequantises each block a quarter as often as four rows would. Up to eight rows, one weight
// row after another (each read in one sequential pass, which decode's speed depends on). Past
// eight, weight rows go in tiles and each group of eight x rows passes over a whole tile: one
// group (18 KB at 576 inputs) stays in L1, where all of x would not. A group larger than
// kGroupBytes (more than 1024 inputs) goes as two passes of four, which stay in L1 (32 KB)
// beside the tile; each row's arithmetic is the same either way, so is its result.
constexpr int64_t kGroupBytes = 32 * 1024;

template <int64_t Q>
AVX512 void rows_avx512(const Job& J, int64_t r0, int64_t r1) {
  if (J.xq) {
    std::vector<float> ds(kIntRows * (J.L.nb + 16));
    for (int64_t r = r0; r < r1; ++r) {
      if (J.n == 2) int_dot_rows_avx512<Q, 2>(J, ds.data(), r);
      else int_dot_rows_avx512<Q, 1>(J, ds.data(), r);
    }
    return;
  }
  if (J.n <= 8) {
    RowScales s(J.L.nb);
    for (int64_t r = r0; r < r1; ++r) {
      scales_avx512(Q, J.L, J.w + r * J.L.row_bytes, s);
      if (J.n == 8) dot_rows_avx512<Q, 8>(J, s, r, 0);
      else tail_avx512<Q>(J, s, r, 0);
    }
    return;
  }
  std::vector<RowScales> s(std::min(kRowTile, r1 - r0), RowScales(J.L.nb));
  for (int64_t t0 = r0; t0 < r1; t0 += kRowTile) {
    const int64_t t1 = std::min(t0 + kRowTile, r1);
    for (int64_t r = t0; r < t1; ++r) scales_avx512(Q, J.L, J.w + r * J.L.row_bytes, s[r - t0]);
    const int64_t full = J.n / 8 * 8;
    if (J.k * 8 * sizeof(float) > kGroupBytes) {
      for (int64_t i = 0; i < full; i += 4)
        for (int64_t r = t0; r < t1; ++r) dot_rows_avx512<Q, 4>(J, s[r - t0], r, i);
    } else {
      for (int64_t i = 0; i < full; i += 8)
        for (int64_t r = t0; r < t1; ++r) dot_rows_avx512<Q, 8>(J, s[r - t0], r, i);
    }
    if (full < J.n)
      for (int64_t r = t0; r < t1; ++r) tail_avx512<Q>(J, s[r - t0], r, full);
  }
}

}  // namespace

AVX512 void quantize_i16_avx512(const float* x, int64_t n, int64_t k, int16_t* xq, float* xs) {
  for (int64_t i = 0; i < n * (k / kBlock); ++i) {
    const float* p = x + i * kBlock;
    const __m512 a = _mm512_loadu_ps(p), b = _mm512_loadu_ps(p + 16);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(b)));
    const bool nan = (_mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q) | _mm512_cmp_ps_mask(b, b, _CMP_UNORD_Q)) != 0;
    xs[i] = nan ? __builtin_nanf("") : amax / 32767.0f;
    // Rounded to nearest; a product that lands a hair past 32767 saturates there. Blocks under
    // 1e-30 (where 32767 / amax would overflow) count as zeros.
    const __m512 inv = _mm512_set1_ps(amax >= 1e-30f && !nan ? 32767.0f / amax : 0.0f);
    int16_t* q = xq + i * kBlock;
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q),
                        _mm512_cvtsepi32_epi16(_mm512_cvtps_epi32(_mm512_mul_ps(a, inv))));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + 16),
                        _mm512_cvtsepi32_epi16(_mm512_cvtps_epi32(_mm512_mul_ps(b, inv))));
  }
}

void matmul_rows_avx512(int64_t qtype, const Job& J, int64_t r0, int64_t r1) {
  switch (qtype) {
    case Q4_0: return rows_avx512<Q4_0>(J, r0, r1);
    case Q4_1: return rows_avx512<Q4_1>(J, r0, r1);
    default: return rows_avx512<Q8_0>(J, r0, r1);
  }
}

}  // namespace parrot::quant

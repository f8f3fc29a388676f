// Vector math the kernels share: an AVX2 exp on eight lanes, and a softmax's maximum and
// exponentiate-and-sum over a row of scores, with their scalar counterparts. Compiled for AVX2
// only in the functions marked so; called only where the CPU has it.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace parrot {

#define AVX2 __attribute__((target("avx2,fma")))

// exp on eight lanes: Cephes' range reduction by ln 2 and degree-6 polynomial (relative error
// about 1e-7), the power of two put in the exponent bits. Inputs are clamped to [-87, 88]:
// below, the result is held at about 1e-38 instead of going subnormal; above, at about 1.7e38
// (softmax passes scores minus their maximum, <= 0; SiLU passes -x).
AVX2 inline __m256 exp8(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
  const __m256 n = _mm256_floor_ps(
      _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
  x = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
  const __m256i e = _mm256_slli_epi32(
      _mm256_add_epi32(_mm256_cvttps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

// The largest of v[0 .. n), n >= 1 (a softmax's maximum).
inline float max_scalar(const float* v, int64_t n) { return *std::max_element(v, v + n); }

AVX2 inline float max_avx2(const float* v, int64_t n) {
  __m256 m = _mm256_set1_ps(v[0]);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(v + j));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, m);
  const float r = max_scalar(lanes, 8);
  return j < n ? std::max(r, max_scalar(v + j, n - j)) : r;
}

// v[j] = exp(v[j] - mx) for j < n; returns their sum.
inline float exp_sum_scalar(float* v, int64_t n, float mx) {
  float sum = 0.0f;
  for (int64_t j = 0; j < n; ++j) sum += v[j] = std::exp(v[j] - mx);
  return sum;
}

AVX2 inline float exp_sum_avx2(float* v, int64_t n, float mx) {
  const __m256 m = _mm256_set1_ps(mx);
  __m256 acc = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 y = exp8(_mm256_sub_ps(_mm256_loadu_ps(v + j), m));
    _mm256_storeu_ps(v + j, y);
    acc = _mm256_add_ps(acc, y);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, acc);
  float sum = 0.0f;
  for (float x : lanes) sum += x;
  return sum + exp_sum_scalar(v + j, n - j, mx);
}

}  // namespace parrot

// Block-quantised weights as the kernels read them (quant_matmul.cpp explains the layout): the
// row layout, a row's scales as fp32, and the arguments every row kernel takes. Shared by the
// portable kernels and the AVX-512 ones, which are compiled apart.
#pragma once

#include <c10/util/Exception.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <cstring>
#include <vector>

namespace parrot::quant {

constexpr int64_t kBlock = 32;
// How far ahead of the block being read the values are prefetched: rows are contiguous, so this
// reaches into the next rows too (the hardware prefetcher alone leaves the loop waiting).
constexpr int64_t kPrefetchBytes = 1024;
// The integer (decode) kernels spend so few cycles per block that the lines asked for 1 KB ahead
// arrive late: they also ask for the line this far ahead into L2, which keeps more of the
// stream in flight than the L1 requests can.
constexpr int64_t kFarPrefetchBytes = 8192;
// Weight rows per tile when x has more rows than one pass takes (see the row kernels).
constexpr int64_t kRowTile = 16;
enum QType : int64_t { Q4_0 = 2, Q4_1 = 3, Q8_0 = 8 };  // GGML's type ids

inline int64_t block_bytes(int64_t qtype) {
  switch (qtype) {
    case Q4_0: return 18;
    case Q4_1: return 20;
    case Q8_0: return 34;
    default: TORCH_CHECK_VALUE(false, "unsupported GGML block type ", qtype);
  }
}

// Where a row's parts start.
struct RowLayout {
  int64_t nb;           // blocks per row
  int64_t row_bytes;
  int64_t value_bytes;  // per block: 16 (Q4) or 32 (Q8_0)
  int64_t values_at;    // offset of the first block's values
  bool offsets;         // Q4_1: m stored after the scales

  RowLayout(int64_t qtype, int64_t k)
      : nb(k / kBlock),
        row_bytes(nb * block_bytes(qtype)),
        value_bytes(qtype == Q8_0 ? 32 : 16),
        values_at(nb * (qtype == Q4_1 ? 4 : 2)),
        offsets(qtype == Q4_1) {}
};

// A row's scales and offsets as fp32 (offsets: Q4_1 its m, Q4_0 -8 d, Q8_0 zero).
struct RowScales {
  std::vector<float> d, m;
  explicit RowScales(int64_t nb) : d(nb + 16), m(nb + 16) {}  // room for whole vectors
};

inline float half(const uint8_t* p) {
  uint16_t bits;
  std::memcpy(&bits, p, 2);
  return c10::detail::fp16_ieee_to_fp32_value(bits);
}

inline void scales_scalar(int64_t qtype, const RowLayout& L, const uint8_t* row, RowScales& s) {
  for (int64_t b = 0; b < L.nb; ++b) {
    s.d[b] = half(row + 2 * b);
    s.m[b] = L.offsets ? half(row + 2 * (L.nb + b)) : qtype == Q4_0 ? -8.0f * s.d[b] : 0.0f;
  }
}

// Sums of each 32-value block of each row of x [n, k] -> [n, nb]: the offsets' share of a dot.
inline std::vector<float> block_sums(const float* x, int64_t n, int64_t k) {
  const int64_t nb = k / kBlock;
  std::vector<float> out(n * nb);
  for (int64_t i = 0; i < n * nb; ++i) {
    float s = 0.0f;
    for (int j = 0; j < kBlock; ++j) s += x[i * kBlock + j];
    out[i] = s;
  }
  return out;
}

// The arguments every row kernel takes.
struct Job {
  int64_t qtype;
  RowLayout L;
  const float* x;   // [n, k]
  const float* sx;  // [n, nb] block sums of x
  const uint8_t* w;
  float* out;       // [n, m]
  int64_t n, k, m;
  // x rounded per block to 16-bit integers, xq * xs ~ x (`quantize_i16_avx512`), for the
  // vector kernels' integer path (at most kIntRows rows); null where x is used as floats.
  const int16_t* xq = nullptr;  // [n, k]
  const float* xs = nullptr;    // [n, nb]
};

// Rows of x up to which the vector kernels multiply in 16-bit integers (decode).
constexpr int64_t kIntRows = 2;

// x [n, k] rounded to 16-bit integers per 32-value block: xq = round(x / xs), xs = a block's
// largest magnitude / 32767 (NaN where the block holds a NaN, so that it reaches the output).
void quantize_i16_avx512(const float* x, int64_t n, int64_t k, int16_t* xq, float* xs);


// The AVX-512 row kernels (quant_matmul_avx512.cpp).
void matmul_rows_avx512(int64_t qtype, const Job& J, int64_t r0, int64_t r1);

}  // namespace parrot::quant

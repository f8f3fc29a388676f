// The CPU operators of the `parrot_cpu_ops` extension (bound in cpu_ops.cpp).
#pragma once

#include <torch/extension.h>

#include <optional>
#include <string>
#include <tuple>
#include <vector>

namespace parrot {

// The vector path the operators run: the best this CPU has, unless set_isa picked a lower one
// (tests run every path the CPU can). quant_matmul.cpp owns it.
enum class Isa { Scalar, Avx2, Avx512 };
Isa detect_isa();
Isa& active_isa();

// quant_matmul.cpp: GGML block-quantised weights (Q4_0, Q4_1, Q8_0 by GGML type id).
torch::Tensor matmul(const torch::Tensor& x, const torch::Tensor& w, int64_t qtype, int64_t k);
// out: a buffer to write into (its first M * K values; float32 or bfloat16), else a new fp32
// tensor.
torch::Tensor dequantize(const torch::Tensor& w, int64_t qtype, int64_t k,
                         const std::optional<torch::Tensor>& out);
std::string set_isa(const std::string& name);
std::string isa();

// layer_ops.cpp: a decoder layer's elementwise work.
torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& w, double eps);
std::tuple<torch::Tensor, torch::Tensor> add_rms_norm(const torch::Tensor& x,
                                                      const torch::Tensor& delta,
                                                      const torch::Tensor& w, double eps);
void rope_(torch::Tensor& qkv, const torch::Tensor& table, int64_t rotated_heads,
           int64_t head_dim);
torch::Tensor silu_mul(const torch::Tensor& gate_up);

// paged_attention.cpp: one query per request against its slots of a [slots, Hkv, D] pool.
torch::Tensor paged_decode_attention(const torch::Tensor& q, const torch::Tensor& k_pool,
                                     const torch::Tensor& v_pool, const torch::Tensor& slots,
                                     const torch::Tensor& lengths, double scale);

// prefill_attention.cpp: causal attention of a chunk's n queries, the last n of the L keys;
// nullopt where it has no vector path (scalar CPUs, a head size not a multiple of 8).
std::optional<torch::Tensor> prefill_attention(const torch::Tensor& q, const torch::Tensor& k,
                                               const torch::Tensor& v, double scale);

// decode_layer.cpp: Llama decoder layers in turn for B decoding requests over block weights;
// per layer two norms (attention, MLP) and four weights and kinds (qkv, o, gate_up, down);
// pools [layers, slots, Hkv, D].
torch::Tensor decode_layers(const torch::Tensor& x, const std::vector<torch::Tensor>& norms,
                            double eps, const std::vector<torch::Tensor>& weights,
                            const std::vector<int64_t>& kinds, const torch::Tensor& rope,
                            int64_t q_heads, int64_t kv_heads, int64_t head_dim,
                            const torch::Tensor& k_pools, const torch::Tensor& v_pools,
                            const torch::Tensor& write_slots, const torch::Tensor& slots,
                            const torch::Tensor& lengths, double scale);

}  // namespace parrot

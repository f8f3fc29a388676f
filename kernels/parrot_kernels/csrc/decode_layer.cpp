// Pre-norm Llama decoder layers for a batch of decoding requests as a single call (one layer,
// or every layer in turn): RMSNorm, the fused q/k/v projection, RoPE, the new keys and values written to the paged pool,
// attention over each request's slots, the output projection with the residual add and the
// next norm, the SiLU-gated MLP and its residual add. The steps are the extension's own
// operators; calling them from here instead of from Python saves the interpreter and
// dispatcher work between them, which for a small model is a sizeable share of a decode step.
// It does not hold the GIL (see cpu_ops.cpp): the server's event loop runs meanwhile.

#include "cpu_ops.h"

namespace parrot {

namespace {

// One layer: norms[0..1] (attention, MLP), weights and kinds[0..3] (qkv, o, gate_up, down).
torch::Tensor layer(const torch::Tensor& x, const torch::Tensor* norms, double eps,
                    const torch::Tensor* weights, const int64_t* kinds, const torch::Tensor& rope,
                    int64_t q_heads, int64_t kv_heads, int64_t head_dim,
                    const torch::Tensor& k_pool, const torch::Tensor& v_pool,
                    const torch::Tensor& write_slots, const torch::Tensor& slots,
                    const torch::Tensor& lengths, double scale) {
  const int64_t b = x.size(0), hidden = x.size(1);
  const int64_t q_dim = q_heads * head_dim, kv_dim = kv_heads * head_dim;
  const int64_t inter = weights[2].size(0) / 2;
  TORCH_CHECK_VALUE(weights[0].size(0) == q_dim + 2 * kv_dim && weights[1].size(0) == hidden &&
                        weights[3].size(0) == hidden,
                    "weight rows do not match the heads and hidden size");

  torch::Tensor qkv = matmul(rms_norm(x, norms[0], eps), weights[0], kinds[0], hidden);
  rope_(qkv, rope, q_heads + kv_heads, head_dim);
  k_pool.index_copy_(0, write_slots, qkv.narrow(1, q_dim, kv_dim).view({b, kv_heads, head_dim}));
  v_pool.index_copy_(0, write_slots,
                     qkv.narrow(1, q_dim + kv_dim, kv_dim).view({b, kv_heads, head_dim}));
  const torch::Tensor q = qkv.narrow(1, 0, q_dim).contiguous().view({b, q_heads, head_dim});
  const torch::Tensor attn = paged_decode_attention(q, k_pool, v_pool, slots, lengths, scale);
  const torch::Tensor o = matmul(attn.view({b, q_dim}), weights[1], kinds[1], q_dim);
  auto [residual, h] = add_rms_norm(x, o, norms[1], eps);
  const torch::Tensor gate_up = matmul(h, weights[2], kinds[2], hidden);
  return residual.add_(matmul(silu_mul(gate_up), weights[3], kinds[3], inter));
}

}  // namespace

torch::Tensor decode_layers(const torch::Tensor& x, const std::vector<torch::Tensor>& norms,
                            double eps, const std::vector<torch::Tensor>& weights,
                            const std::vector<int64_t>& kinds, const torch::Tensor& rope,
                            int64_t q_heads, int64_t kv_heads, int64_t head_dim,
                            const torch::Tensor& k_pools, const torch::Tensor& v_pools,
                            const torch::Tensor& write_slots, const torch::Tensor& slots,
                            const torch::Tensor& lengths, double scale) {
  TORCH_CHECK_VALUE(x.dim() == 2, "x must be [B, hidden]");
  const int64_t layers = k_pools.size(0);
  TORCH_CHECK_VALUE(k_pools.dim() == 4 && v_pools.sizes() == k_pools.sizes(),
                    "k_pools and v_pools must be [layers, slots, kv_heads, head_dim]");
  TORCH_CHECK_VALUE(static_cast<int64_t>(norms.size()) == 2 * layers &&
                        static_cast<int64_t>(weights.size()) == 4 * layers &&
                        static_cast<int64_t>(kinds.size()) == 4 * layers,
                    "two norms and four weights and kinds per layer");
  torch::Tensor h = x;
  for (int64_t l = 0; l < layers; ++l) {
    h = layer(h, &norms[2 * l], eps, &weights[4 * l], &kinds[4 * l], rope, q_heads, kv_heads,
              head_dim, k_pools[l], v_pools[l], write_slots, slots, lengths, scale);
  }
  return h;
}

}  // namespace parrot

// anllm/weights.hpp - the parameters of the demo model: seeded init, safetensors load/save.
//
// Tensor names and layouts follow Hugging Face Llama checkpoints (a linear layer's weight is
// (out_features, in_features); y = x W^T), so a real checkpoint of this shape loads as is:
//   model.embed_tokens.weight                 (vocab, dim)
//   model.layers.{l}.input_layernorm.weight   (dim)
//   model.layers.{l}.self_attn.q_proj.weight  (heads*head_dim, dim)      k/v_proj:
//   kv_heads*head_dim model.layers.{l}.self_attn.o_proj.weight  (dim, heads*head_dim)
//   model.layers.{l}.post_attention_layernorm.weight  (dim)
//   model.layers.{l}.mlp.gate_proj.weight / up_proj   (ffn_dim, dim);  down_proj (dim, ffn_dim)
//   model.norm.weight                         (dim)
//   lm_head.weight                            (vocab, dim), absent when the head is tied
// Random weights are not a trained model: the demo's generated text is noise, but every
// number it prints about attention, caches and exactness holds for any weights.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "config.hpp"
#include "safetensors.hpp"

namespace anllm {

using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Vector = Eigen::VectorXf;

struct LayerWeights {
  Vector attn_norm;  // (dim)
  Matrix wq;         // (heads*head_dim, dim)
  Matrix wk;         // (kv_heads*head_dim, dim)
  Matrix wv;         // (kv_heads*head_dim, dim)
  Matrix wo;         // (dim, heads*head_dim)
  Vector mlp_norm;   // (dim)
  Matrix w_gate;     // (ffn_dim, dim)
  Matrix w_up;       // (ffn_dim, dim)
  Matrix w_down;     // (dim, ffn_dim)
};

struct Weights {
  ModelConfig config;
  Matrix embedding;  // (vocab, dim)
  std::vector<LayerWeights> layers;
  Vector final_norm;  // (dim)
  Matrix lm_head;     // (vocab, dim); empty when config.tied_head

  const Matrix& output_head() const { return config.tied_head ? embedding : lm_head; }
};

// One named parameter: where it lives and the shape the config says it has.
struct Parameter {
  std::string name;
  float* data;
  std::vector<std::int64_t> shape;
};

// Every parameter of `w` in checkpoint order. `w` must already be sized for its config.
inline std::vector<Parameter> parameters(Weights& w) {
  std::vector<Parameter> out;
  const auto matrix = [&](const std::string& name, Matrix& m) {
    out.push_back({name, m.data(), {m.rows(), m.cols()}});
  };
  const auto vector = [&](const std::string& name, Vector& v) {
    out.push_back({name, v.data(), {v.size()}});
  };
  matrix("model.embed_tokens.weight", w.embedding);
  for (std::size_t l = 0; l < w.layers.size(); ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    LayerWeights& L = w.layers[l];
    vector(p + "input_layernorm.weight", L.attn_norm);
    matrix(p + "self_attn.q_proj.weight", L.wq);
    matrix(p + "self_attn.k_proj.weight", L.wk);
    matrix(p + "self_attn.v_proj.weight", L.wv);
    matrix(p + "self_attn.o_proj.weight", L.wo);
    vector(p + "post_attention_layernorm.weight", L.mlp_norm);
    matrix(p + "mlp.gate_proj.weight", L.w_gate);
    matrix(p + "mlp.up_proj.weight", L.w_up);
    matrix(p + "mlp.down_proj.weight", L.w_down);
  }
  vector("model.norm.weight", w.final_norm);
  if (!w.config.tied_head) matrix("lm_head.weight", w.lm_head);
  return out;
}

// Zero weights with every tensor sized for `config`.
inline Weights allocate_weights(const ModelConfig& config) {
  config.validate();
  Weights w;
  w.config = config;
  const int d = config.dim, q = config.heads * config.head_dim,
            kv = config.kv_heads * config.head_dim;
  w.embedding = Matrix::Zero(config.vocab, d);
  w.layers.resize(std::size_t(config.layers));
  for (auto& L : w.layers) {
    L.attn_norm = Vector::Zero(d);
    L.wq = Matrix::Zero(q, d);
    L.wk = Matrix::Zero(kv, d);
    L.wv = Matrix::Zero(kv, d);
    L.wo = Matrix::Zero(d, q);
    L.mlp_norm = Vector::Zero(d);
    L.w_gate = Matrix::Zero(config.ffn_dim, d);
    L.w_up = Matrix::Zero(config.ffn_dim, d);
    L.w_down = Matrix::Zero(d, config.ffn_dim);
  }
  w.final_norm = Vector::Zero(d);
  if (!config.tied_head) w.lm_head = Matrix::Zero(config.vocab, d);
  return w;
}

// Deterministic random weights: N(0, 1/fan_in) for projections (so activations keep their
// scale through the layers and attention is far from uniform), N(0, 1) embeddings, norms
// near 1. A seed names one model across standard libraries: mt19937_64 is specified by the
// standard, and the normal variates come from Box-Muller here rather than from the
// implementation-defined std::normal_distribution.
inline Weights init_weights(const ModelConfig& config, std::uint64_t seed) {
  Weights w = allocate_weights(config);
  std::mt19937_64 rng(seed);
  const auto normal = [&rng]() {
    const double u1 = (double(rng() >> 11) + 0.5) * 0x1.0p-53;  // (0, 1)
    const double u2 = double(rng() >> 11) * 0x1.0p-53;          // [0, 1)
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  };
  for (Parameter& p : parameters(w)) {
    const std::int64_t numel = p.shape.size() == 1 ? p.shape[0] : p.shape[0] * p.shape[1];
    const bool is_norm = p.shape.size() == 1;
    const bool is_embedding = p.name == "model.embed_tokens.weight";
    const double scale = is_embedding ? 1.0 : 1.0 / std::sqrt(double(p.shape.back()));
    for (std::int64_t i = 0; i < numel; ++i)
      p.data[i] = float(is_norm ? 1.0 + 0.1 * normal() : scale * normal());
  }
  return w;
}

// Loads a checkpoint of `config`'s shape. Every expected tensor must be present with exactly
// the expected shape; a missing or mismatched one throws std::runtime_error naming it.
// Tensors the model does not use (e.g. rotary caches) are ignored.
inline Weights load_weights(const ModelConfig& config, const std::string& path) {
  Weights w = allocate_weights(config);
  auto file = read_safetensors(path);
  const std::string fn = "load_weights(" + path + ")";
  for (Parameter& p : parameters(w)) {
    const auto found = file.find(p.name);
    check_file(found != file.end(), fn, "tensor '" + p.name + "'", "missing",
               "present (" + shape_text(p.shape) + ")");
    check_file(found->second.shape == p.shape, fn, "tensor '" + p.name + "' shape",
               shape_text(found->second.shape), shape_text(p.shape) + " from the model config");
    std::copy(found->second.data.begin(), found->second.data.end(), p.data);
  }
  return w;
}

inline void save_weights(Weights& w, const std::string& path, FileDtype dtype = FileDtype::f32) {
  std::vector<TensorToWrite> tensors;
  for (const Parameter& p : parameters(w)) tensors.push_back({p.name, p.shape, p.data});
  write_safetensors(path, tensors, dtype);
}

}  // namespace anllm

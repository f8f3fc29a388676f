"""Rotary position embeddings in the HF "rotate_half" layout: a head's first half pairs with its
second half (llama.cpp's interleaved layout is undone when a GGUF is read)."""

from __future__ import annotations

import math

import torch

from .config import ModelConfig, RopeScaling, RopeScalingKind


def base_inv_freq(head_dim: int, theta: float) -> torch.Tensor:
    """theta^(-2i/d) for i < d/2, in fp32, computed the way transformers does for bit parity."""
    exponent = torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim
    return 1.0 / (theta**exponent)


def llama3_inv_freq(inv_freq: torch.Tensor, s: RopeScaling) -> torch.Tensor:
    """Llama 3.1: wavelengths longer than original_ctx / low_freq_factor are stretched by
    `factor`, shorter than original_ctx / high_freq_factor kept, the band between blended."""
    ctx = s.original_max_position_embeddings
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > ctx / s.low_freq_factor, inv_freq / s.factor, inv_freq)
    smooth = (ctx / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor)
    blended = (1 - smooth) * scaled / s.factor + smooth * scaled
    in_band = (wavelen >= ctx / s.high_freq_factor) & (wavelen <= ctx / s.low_freq_factor)
    return torch.where(in_band, blended, scaled)


def inv_freq(config: ModelConfig) -> torch.Tensor:
    freq = base_inv_freq(config.head_dim, config.rope_theta)
    s = config.rope_scaling
    if s is None:
        return freq
    if s.kind is RopeScalingKind.LINEAR:
        return freq / s.factor  # same as dividing every position by factor
    return llama3_inv_freq(freq, s)


def rope_tables(config: ModelConfig, device: torch.device | str = "cpu") -> torch.Tensor:
    """[max_positions, 2, head_dim / 2] fp32: cos and sin of every position's angles. Half
    width: rotate_half uses each angle for both halves of a head."""
    with torch.device("cpu"):  # real numbers even when the model is being built on "meta"
        positions = torch.arange(config.max_position_embeddings, dtype=torch.float32)
        angles = torch.outer(positions, inv_freq(config))
        return torch.stack([angles.cos(), angles.sin()], dim=1).to(device)

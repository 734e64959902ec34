"""How a policy acts on Q-values: softmax over Q/temperature for behaviour, argmax for evaluation."""

from __future__ import annotations

import numpy as np
import torch


def softmax_actions(q: torch.Tensor, temperature: torch.Tensor, uniforms: np.ndarray) -> np.ndarray:
    """Sample a ~ softmax(Q/temperature) per row by inverting the CDF with given uniforms.

    q [P, E, A], temperature [P], uniforms [P, E] in [0, 1) -> int64 actions [P, E].
    """
    probs = torch.softmax(q / temperature.view(-1, 1, 1), dim=-1).cpu().numpy()
    cdf = np.cumsum(probs, axis=-1)
    actions = (cdf < uniforms[..., None] * cdf[..., -1:]).sum(axis=-1)
    return np.minimum(actions, q.shape[-1] - 1).astype(np.int64)


def greedy_actions(q: torch.Tensor) -> np.ndarray:
    return q.argmax(dim=-1).cpu().numpy().astype(np.int64)

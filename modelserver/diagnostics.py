"""Model diagnostics on held-out real transitions, and PanFlute's reward-smoothing probe (Figure 4).

next_obs_error   fraction of next-observation features predicted wrong (non-terminal transitions;
                 simple: logits > 0; latent: decoder of a sampled prior latent)
reward_se        mean squared error of the predicted reward
continuation_acc fraction of transitions whose continuation the model gets right (p > 0.5)
reward_by_active_ends  PanFlute (the paper's Figure 4, left): mean predicted reward by the number of
                 pipe ends active in the current state, on data from a policy that plays the
                 rewarding cycle with probability 0.8, else at random. The true reward is 0 in every
                 bin but the last; a model that predicts more for more active ends has smoothed it.
rewarding_next_by_active_ends  the same data binned by the number of pipe ends active in the true
                 next state: the model's probability that every end is active next, the product
                 over end features of sigmoid(next-observation logit) (latent models: of the decoder
                 of one sampled prior latent). The truth is 0 in every bin but the last.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from mbgen.modelserver.interface import DynamicsModel

from mbgen import envs


@torch.no_grad()
def accuracy(model: DynamicsModel, obs, action, reward, next_obs, continuation) -> dict[str, list[float]]:
    """Per-member diagnostics on a [P, B] batch of real transitions."""
    logits, reward_hat, cont = model.predict(obs, action)
    wrong = ((logits > 0).to(next_obs.dtype) != next_obs).to(torch.float32).mean(-1)  # [P, B]
    live = continuation.sum(-1).clamp_min(1)
    return {
        "next_obs_error": ((wrong * continuation).sum(-1) / live).tolist(),
        "reward_se": ((reward_hat - reward) ** 2).mean(-1).tolist(),
        "continuation_acc": ((cont > 0.5).to(torch.float32) == continuation).to(torch.float32).mean(-1).tolist(),
    }


class Probe(NamedTuple):
    """PanFlute transitions of the 80%-rewarding-cycle policy (K of them)."""

    obs: np.ndarray  # bool [K, D]
    actions: np.ndarray  # [K]
    ends: np.ndarray  # [K] pipe ends active in obs
    next_ends: np.ndarray  # [K] pipe ends active in the true next observation
    end_features: np.ndarray  # indices of the pipe-end features


def panflute_probe(num_pipes: int, steps: int = 64, copies: int = 64, seed: int = 12345) -> Probe:
    env = envs.make("panflute", copies, seed, num_pipes=num_pipes)
    rng = np.random.default_rng(seed)
    obs, rows = env.reset(), []
    phase = rng.integers(0, num_pipes, copies)
    for t in range(steps):
        cyclic = num_pipes - 1 - (phase + t) % num_pipes
        actions = np.where(rng.random(copies) < 0.8, cyclic, rng.integers(0, num_pipes, copies))
        next_obs, _, _, acted_on = env.step(actions)
        rows.append((obs, actions, next_obs))
        obs = acted_on
    obs, actions, next_obs = (np.concatenate([row[i] for row in rows]) for i in range(3))
    return Probe(obs, actions, env.active_ends(obs), env.active_ends(next_obs), env.layout[1])


def binned(values: np.ndarray, bins: np.ndarray, count: int) -> list[float | None]:
    """Mean of `values` per bin 0..count-1 (None for an empty bin)."""
    return [float(values[bins == k].mean()) if (bins == k).any() else None for k in range(count)]


@torch.no_grad()
def smoothing(model: DynamicsModel, probe: Probe, members: int, device) -> dict[str, list[float | None]]:
    """reward_by_active_ends and rewarding_next_by_active_ends (see the module docstring), over
    members and probe states, for 0..n active pipe ends."""
    o = torch.from_numpy(probe.obs).to(device, torch.float32).expand(members, -1, -1).contiguous()
    a = torch.from_numpy(probe.actions).to(device).expand(members, -1).contiguous()
    prediction = model.predict(o, a)
    ends = torch.from_numpy(probe.end_features).to(device)
    all_active = torch.sigmoid(prediction.next_obs_logits[..., ends]).prod(-1)  # [P, K]
    count = probe.end_features.size + 1
    return {
        "reward_by_active_ends": binned(prediction.reward.mean(0).cpu().numpy(), probe.ends, count),
        "rewarding_next_by_active_ends": binned(all_active.mean(0).cpu().numpy(), probe.next_ends, count),
    }

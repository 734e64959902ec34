"""Model diagnostics on held-out real transitions, and PanFlute's reward-smoothing probe (Figure 4).

next_obs_error   fraction of next-observation features predicted wrong (non-terminal transitions;
                 simple: logits > 0; latent: decoder of a sampled prior latent)
reward_se        mean squared error of the predicted reward
continuation_acc fraction of transitions whose continuation the model gets right (p > 0.5)
reward_by_active_ends  PanFlute: mean predicted reward by number of active pipe ends, on data from a
                 policy that plays the rewarding cycle with probability 0.8, else at random
"""

from __future__ import annotations

import numpy as np
import torch

import envs
from modelserver.interface import DynamicsModel


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


def panflute_probe(num_pipes: int, steps: int = 64, copies: int = 64, seed: int = 12345):
    """(obs bool [K, D], actions [K], active ends [K]) from the 80%-rewarding-cycle policy."""
    env = envs.make("panflute", copies, seed, num_pipes=num_pipes)
    rng = np.random.default_rng(seed)
    obs, rows = env.reset(), []
    phase = rng.integers(0, num_pipes, copies)
    for t in range(steps):
        cyclic = num_pipes - 1 - (phase + t) % num_pipes
        actions = np.where(rng.random(copies) < 0.8, cyclic, rng.integers(0, num_pipes, copies))
        rows.append((obs, actions))
        obs = env.step(actions)[3]
    obs = np.concatenate([o for o, _ in rows])
    actions = np.concatenate([a for _, a in rows])
    return obs, actions, env.active_ends(obs)


@torch.no_grad()
def reward_by_active_ends(model: DynamicsModel, probe, members: int, device) -> list[float | None]:
    """Mean predicted reward (over members and probe states) for 0..n active pipe ends."""
    obs, actions, ends = probe
    o = torch.from_numpy(obs).to(device, torch.float32).expand(members, -1, -1).contiguous()
    a = torch.from_numpy(actions).to(device).expand(members, -1).contiguous()
    mean = model.predict(o, a).reward.mean(0).cpu().numpy()
    return [float(mean[ends == k].mean()) if (ends == k).any() else None for k in range(int(ends.max()) + 1)]

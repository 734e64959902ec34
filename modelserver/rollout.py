"""RolloutEngine: batched imagined rollouts for every member at once.

From S start states per member, L steps: at each step the Q-network picks
actions by softmax over Q/temperature (Gumbel-max sampling), the model steps
all P x S states in one batched call, and the transition is recorded with its
weight. In episodic environments the weight of step i is the product of the
continuation probabilities of steps 0..i-1 (1 for the first step); in
continuing ones it is 1. Output: [P, S*L] transitions, start-major (rollout s,
step i at index s*L + i).
"""
from __future__ import annotations

import torch

FIELDS = ("obs", "action", "reward", "next_obs", "continuation", "weight")


def softmax_sample(q: torch.Tensor, temperature: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Actions [P, S] ~ softmax(q / temperature[p]) via Gumbel-max."""
    u = torch.rand(q.shape, generator=generator, device=q.device).clamp_(1e-20, 1.0)
    return (q / temperature.view(-1, 1, 1) - torch.log(-torch.log(u))).argmax(-1)


@torch.no_grad()
def rollout(model, q_net, start_obs: torch.Tensor, length: int, temperature: torch.Tensor, episodic: bool,
            generator: torch.Generator | None, out: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Imagined transitions [P, S*length, ...] from start observations [P, S, D]."""
    P, S = start_obs.shape[:2]
    state = model.start(start_obs)
    x = model.q_input(state)
    if out is None:
        width = x.shape[-1]
        out = {"obs": x.new_empty(P, S * length, width), "action": torch.empty(P, S * length, dtype=torch.int64,
               device=x.device), "reward": x.new_empty(P, S * length), "next_obs": x.new_empty(P, S * length, width),
               "continuation": x.new_empty(P, S * length), "weight": x.new_empty(P, S * length)}
    view = {k: v.view(P, S, length, *v.shape[2:]) for k, v in out.items()}
    weight = torch.ones(P, S, device=x.device)
    for i in range(length):
        action = softmax_sample(q_net(x), temperature, generator)
        next_state, reward, continuation = model.step(state, action)
        next_x = model.q_input(next_state)
        view["obs"][:, :, i] = x
        view["action"][:, :, i] = action
        view["reward"][:, :, i] = reward
        view["next_obs"][:, :, i] = next_x
        view["continuation"][:, :, i] = continuation
        view["weight"][:, :, i] = weight
        if episodic:
            weight = weight * continuation
        state, x = next_state, next_x
    return out

"""Decision-time planning with a learned model: first-action values of short action sequences.

From each state s_0 an action sequence a_0 .. a_{d-1} is scored through a deterministic model
step (s_{i+1}, r_i, c_i) = step(s_i, a_i) and the agent's Q-network at the end:

    score(a_0 .. a_{d-1}) = sum_{i<d} gamma^i D_i r_i + gamma^d D_d max_a Q(s_d, a),    D_i = c_0 ... c_{i-1}

(c = 1 in continuing environments). A first action's planned value is the best score of the
sequences that start with it; the behaviour policy is softmax over these values at the agent's
temperature, evaluation takes the best.

Two searches, both over fixed-shape arrays, every state of every member in one batch per depth
(no Python loop per state or per tree node):
  exhaustive   every one of the A^d sequences, expanded level by level (A, A^2, ... states);
               used when A^d <= samples
  CEM          stratified on the first action: `samples // A` continuations per first action are
               drawn from per-step categorical distributions over actions for steps 1 .. d-1, scored,
               and the distributions refit to the elite fraction of all sequences (a smoothed
               frequency), for `iterations` rounds; a first action's value is the best score of its
               stratum over all rounds.
"""

from __future__ import annotations

from typing import Callable

import torch

Step = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
QValues = Callable[[torch.Tensor], torch.Tensor]
ELITE_FRACTION = 0.1  # CEM: the share of sequences the distributions are refit to
SMOOTHING = 0.5  # CEM: new distribution = SMOOTHING * elite frequency + (1 - SMOOTHING) * old


def exhaustive(step: Step, q_values: QValues, obs: torch.Tensor, num_actions: int, depth: int, gamma: float):
    """First-action values [P, N, A] of states obs [P, N, D], over every sequence of `depth` actions."""
    P, N, D = obs.shape
    A = num_actions
    states = obs
    score = obs.new_zeros(P, N, 1)
    discount = obs.new_ones(P, N, 1)  # gamma^i D_i of each node
    for i in range(depth):
        nodes = A**i
        s = states.view(P, N, nodes, 1, D).expand(P, N, nodes, A, D).reshape(P, N * nodes * A, D)
        a = torch.arange(A, device=obs.device).repeat(N * nodes).expand(P, -1)
        states, reward, cont = step(s, a)
        score = (score.unsqueeze(-1) + discount.unsqueeze(-1) * reward.view(P, N, nodes, A)).view(P, N, nodes * A)
        discount = (discount.unsqueeze(-1) * gamma * cont.view(P, N, nodes, A)).view(P, N, nodes * A)
    score = score + discount * q_values(states).max(-1).values.view(P, N, A**depth)
    return score.view(P, N, A, A ** (depth - 1)).max(-1).values


def sequence_scores(step: Step, q_values: QValues, obs: torch.Tensor, actions: torch.Tensor, gamma: float):
    """Scores [P, N, S] of action sequences actions [P, N, S, d] from states obs [P, N, D]."""
    P, N, S, d = actions.shape
    states = obs.unsqueeze(2).expand(P, N, S, obs.shape[-1]).reshape(P, N * S, -1)
    score = obs.new_zeros(P, N * S)
    discount = obs.new_ones(P, N * S)
    for i in range(d):
        states, reward, cont = step(states, actions[..., i].reshape(P, N * S))
        score = score + discount * reward
        discount = discount * gamma * cont
    score = score + discount * q_values(states).max(-1).values
    return score.view(P, N, S)


def cem(
    step: Step,
    q_values: QValues,
    obs: torch.Tensor,
    num_actions: int,
    depth: int,
    gamma: float,
    samples: int,
    iterations: int,
    generator: torch.Generator | None,
):
    """First-action values [P, N, A] by the cross-entropy method over per-step categoricals (module docstring)."""
    P, N, _ = obs.shape
    A = num_actions
    per_action = max(1, samples // A)
    probs = obs.new_full((P, N, depth - 1, A), 1.0 / A)
    first = torch.arange(A, device=obs.device).view(1, 1, A, 1, 1).expand(P, N, A, per_action, 1)
    best = obs.new_full((P, N, A), -torch.inf)
    elites = max(1, int(ELITE_FRACTION * A * per_action))
    for _ in range(iterations):
        if depth > 1:
            draws = probs.view(P * N * (depth - 1), A).multinomial(A * per_action, True, generator=generator)
            rest = draws.view(P, N, depth - 1, A, per_action).permute(0, 1, 3, 4, 2)
            actions = torch.cat([first, rest], dim=-1)  # [P, N, A, per_action, d]
        else:
            actions = first
        scores = sequence_scores(step, q_values, obs, actions.reshape(P, N, A * per_action, depth), gamma)
        best = torch.maximum(best, scores.view(P, N, A, per_action).max(-1).values)
        if depth > 1:
            top = scores.topk(elites, dim=-1).indices  # [P, N, elites]
            chosen = actions.reshape(P, N, A * per_action, depth)[..., 1:].gather(
                2, top.unsqueeze(-1).expand(P, N, elites, depth - 1)
            )  # [P, N, elites, d-1]
            frequency = torch.nn.functional.one_hot(chosen, A).to(obs.dtype).mean(2)  # [P, N, d-1, A]
            probs = SMOOTHING * frequency + (1 - SMOOTHING) * probs
    return best


def plan(
    step: Step,
    q_values: QValues,
    obs: torch.Tensor,
    num_actions: int,
    depth: int,
    gamma: float,
    samples: int,
    iterations: int,
    generator: torch.Generator | None,
):
    """First-action values [P, N, A]: every sequence when A^depth <= samples, else CEM."""
    if num_actions**depth <= samples:
        return exhaustive(step, q_values, obs, num_actions, depth, gamma)
    return cem(step, q_values, obs, num_actions, depth, gamma, samples, iterations, generator)

"""Value-expansion targets: the model lengthens the target, not the data (MVE, STEVE), as plain tensor maths.

A *path* starts at a real replay transition (s_0, a_0, r_0, s_1, c_0) and goes on for H imagined
steps under the behaviour policy: transitions t = 0 .. L-1 with L = H + 1, each with reward r_t,
continuation c_t (1 - terminal for the real one, the model's probability for imagined ones),
validity v_t (1 unless the model could not produce the transition: modelserver/interface.py Step)
and the bootstrap value V_t = max_a Q_target(s_{t+1}, a) of the state it leads to.

MVE (Feinberg et al. 2018, the "TD-k" form): every state of the path is trained toward its
multi-step target, computed backwards from the end of the path,

    y_{L-1} = r_{L-1} + gamma c_{L-1} V_{L-1}
    y_t     = r_t + gamma c_t ( v_{t+1} y_{t+1} + (1 - v_{t+1}) V_t )

so with every v = 1, y_t = sum_{k=t}^{L-1} gamma^(k-t) (c_t ... c_{k-1}) r_k + gamma^(L-t) (c_t ... c_{L-1}) V_{L-1},
and a path is bootstrapped at the last state before an invalid transition. Row t is trained with
weight w_t = v_t prod_{j<t} (c_j v_j): the probability the path reached s_t through valid steps.

STEVE (Buckman et al. 2018): K models each imagine their own path from the same real transition.
For horizon h = 0 .. L-1 model k's candidate target of the real state is

    T^k_h = sum_{i=0}^{h} gamma^i D^k_i r^k_i + gamma^(h+1) D^k_(h+1) V^k_h,    D^k_i = c^k_0 ... c^k_(i-1)

(h = 0 is the 1-step TD target of the real transition). With mu_h and var_h the mean and the
variance over the K models, the target is the inverse-variance weighted mean over horizons

    y = sum_h w_h mu_h,   w_h = (1 / (var_h + eps)) / sum_h' (1 / (var_h' + eps))

eps keeps horizon 0 finite: the models cannot disagree on the real transition. When the models
agree everywhere the weights are equal and y is the plain mean over horizons; where they disagree
the long horizons lose their weight.
"""

from __future__ import annotations

STEVE_EPS = 1e-4  # variance floor of STEVE's horizon weights (see the module docstring)


def mve_targets(reward, continuation, valid, bootstrap, gamma: float):
    """(targets, weights), both [..., L], from paths of L transitions: reward, continuation, valid and
    bootstrap [..., L] (valid 1 where the model produced the transition; bootstrap V_t of s_{t+1})."""
    L = reward.shape[-1]
    targets = reward.clone()
    y = reward[..., L - 1] + gamma * continuation[..., L - 1] * bootstrap[..., L - 1]
    targets[..., L - 1] = y
    for t in range(L - 2, -1, -1):
        v = valid[..., t + 1]
        y = reward[..., t] + gamma * continuation[..., t] * (v * y + (1 - v) * bootstrap[..., t])
        targets[..., t] = y
    reach = (continuation * valid).cumprod(-1)
    weights = valid.clone()
    weights[..., 1:] = valid[..., 1:] * reach[..., :-1]
    return targets, weights


def steve_candidates(reward, continuation, bootstrap, gamma: float):
    """Every model's candidate target per horizon, [..., K, L] from [..., K, L] paths (module docstring)."""
    L = reward.shape[-1]
    powers = gamma ** reward.new_tensor(range(L))
    reach = continuation.new_ones(continuation.shape)
    reach[..., 1:] = continuation[..., :-1].cumprod(-1)  # D_i = c_0 ... c_{i-1}
    discounted = powers * reach  # gamma^i D_i
    return (discounted * reward).cumsum(-1) + gamma * discounted * continuation * bootstrap


def steve_targets(reward, continuation, bootstrap, gamma: float, eps: float = STEVE_EPS):
    """(targets [...], horizon weights [..., L]) from K models' paths [..., K, L] (module docstring)."""
    candidates = steve_candidates(reward, continuation, bootstrap, gamma)
    mean = candidates.mean(-2)
    variance = candidates.var(-2, unbiased=False)
    inverse = 1.0 / (variance + eps)
    weights = inverse / inverse.sum(-1, keepdim=True)
    return (weights * mean).sum(-1), weights


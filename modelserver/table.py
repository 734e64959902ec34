"""TableModel: Dyna with a tabular model, the control of PAPER.md's Theorem 1 (part 3).

The model is a table of the transitions it was trained on: per member, every
distinct outcome (r, o', c) seen after each (observation o, action a), with n,
the number of times it was seen. A step from (o, a) draws outcome j of the pair
with the empirical probability

    P(j | o, a) = n_j / sum_{k in pair(o, a)} n_k

and a pair never seen has no outcome: the step is invalid (Step.valid = 0), so
the rollout's weight is 0 from there on (modelserver/rollout.py). Multi-step
rollouts without generalisation.

Keys are 64-bit Zobrist-style sums of random words, wrapping modulo 2^64:

    key(p, o, a)        = sum_f o_f W_f + U_a + M_p                 the pair, member p's
    outcome(o', r, c)   = sum_f o'_f W'_f + bits(r) V_r + c V_c
    entry(p, o, a, ...) = key * V_e + outcome

Two different pairs (or entries) share a key with probability 2^-64: with 10^6
entries the chance of any collision in a run is below 10^-7, and a collision only
merges two pairs' outcomes. Entries live in flat arrays over every member (in
insertion order); two sorted indices (by key, by entry) make every lookup a
`searchsorted`, so training and stepping are vectorised, with no Python loop per
transition. The indices are rebuilt only when entries are added or evicted.

Memory is bounded by the replay capacity: a member keeps at most `capacity`
entries, the oldest evicted first (as the replay ring drops its oldest).
"""

from __future__ import annotations

import numpy as np
import torch
from mbgen.modelserver.interface import ModelContext, Prediction, Step

HASH_SEED = 0x7AB1E  # the hash words are fixed: checkpoints stay valid across runs
FIELDS = ("member", "key", "entry", "count", "reward", "continuation", "next_obs")


def zobrist(bits: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
    """sum_f bits_f words_f modulo 2^64 (int64, wrapping): [..., D] 0/1 and [D] -> [...]."""
    return torch.where(bits > 0.5, words, torch.zeros_like(words)).sum(-1)


def float_bits(x: torch.Tensor) -> torch.Tensor:
    """The IEEE bits of float32 values, as int64 (equal floats, equal bits)."""
    return x.to(torch.float32).contiguous().view(torch.int32).to(torch.int64)


def group_ranges(sorted_keys: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[lo, hi): the positions of `keys` in `sorted_keys` (hi == lo: not there)."""
    return torch.searchsorted(sorted_keys, keys), torch.searchsorted(sorted_keys, keys, right=True)


def sample_in_groups(cum: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Position j in [lo, hi) drawn with probability n_j / sum_{lo <= k < hi} n_k, from u in [0, 1).

    With C the cumulative counts in key order (C_{-1} = 0):
        j = the first j with C_j > C_{lo-1} + u (C_{hi-1} - C_{lo-1})
    Empty groups (lo == hi) give lo, clamped into the table; callers mask them.
    """
    if cum.numel() == 0:
        return torch.zeros_like(lo)
    last = cum.numel() - 1
    base = torch.where(lo > 0, cum[(lo - 1).clamp(0, last)], torch.zeros((), dtype=cum.dtype, device=cum.device))
    total = cum[(hi - 1).clamp(0, last)] - base
    j = torch.searchsorted(cum, base + u.to(cum.dtype) * total, right=True)
    return torch.minimum(torch.maximum(j, lo), (hi - 1).clamp_min(lo)).clamp(0, last)


def keep_newest(member: torch.Tensor, members: int, capacity: int) -> torch.Tensor:
    """Mask [N] keeping each member's last `capacity` entries in array (insertion) order."""
    n = torch.bincount(member, minlength=members)
    order = torch.sort(member, stable=True).indices
    starts = torch.cumsum(n, 0) - n
    rank = torch.arange(member.numel(), device=member.device) - starts[member[order]]
    keep = torch.empty_like(member, dtype=torch.bool)
    keep[order] = rank >= (n[member[order]] - capacity)
    return keep


class TableModel:
    """The table of seen transitions (see the module docstring); nothing trained by gradient."""

    member_parallel = False
    learned = True  # built from data: diagnostics compare it with held-out transitions
    store = None

    def __init__(self, ctx: ModelContext):
        cfg, device = ctx.cfg, ctx.device
        obs_dim, num_actions = ctx.obs_dim, ctx.num_actions
        self.members, self.capacity, self.obs_dim = cfg.members, cfg.learning.capacity, obs_dim
        self.device = torch.device(device)
        words = torch.Generator().manual_seed(HASH_SEED)
        draw = lambda n: torch.randint(-(2**63), 2**63 - 1, (n,), generator=words, dtype=torch.int64)  # noqa: E731
        self.w_obs, self.w_action, self.w_member = draw(obs_dim), draw(num_actions), draw(cfg.members)
        self.w_next, (self.v_reward, self.v_cont, self.v_entry) = draw(obs_dim), draw(3).tolist()
        self.v_entry |= 1  # odd: key -> key * V_e is a bijection modulo 2^64
        for name in ("w_obs", "w_action", "w_member", "w_next"):
            setattr(self, name, getattr(self, name).to(self.device))
        self.load_state_dict(self.empty())

    # -- keys -----------------------------------------------------------------------------
    def pair_keys(self, obs, action, members: slice | None = None) -> torch.Tensor:
        """key(p, o, a) [p, B] for observations [p, B, D] and actions [p, B]."""
        m = self.w_member if members is None else self.w_member[members]
        return zobrist(obs, self.w_obs) + self.w_action[action] + m[: obs.shape[0]].view(-1, 1)

    def entry_keys(self, key, reward, next_obs, continuation) -> torch.Tensor:
        outcome = zobrist(next_obs, self.w_next) + float_bits(reward) * self.v_reward
        return key * self.v_entry + outcome + float_bits(continuation) * self.v_cont

    # -- the table ----------------------------------------------------------------------------
    def empty(self) -> dict[str, np.ndarray]:
        return {
            "member": np.zeros(0, np.int64),
            "key": np.zeros(0, np.int64),
            "entry": np.zeros(0, np.int64),
            "count": np.zeros(0, np.float64),
            "reward": np.zeros(0, np.float32),
            "continuation": np.zeros(0, np.float32),
            "next_obs": np.zeros((0, self.obs_dim), bool),
        }

    def reindex(self) -> None:
        """The sorted indices, after entries were added or evicted."""
        self.by_key = torch.argsort(self.t["key"], stable=True)
        self.sorted_key = self.t["key"][self.by_key]
        self.by_entry = torch.argsort(self.t["entry"], stable=True)
        self.sorted_entry = self.t["entry"][self.by_entry]
        self.recount()

    def recount(self) -> None:
        self.cum = torch.cumsum(self.t["count"][self.by_key], 0)

    @property
    def size(self) -> int:
        return self.t["key"].numel()

    def entries_per_member(self) -> list[int]:
        return torch.bincount(self.t["member"], minlength=self.members).tolist()

    @torch.no_grad()
    def train_step(self, obs, action, reward, next_obs, continuation) -> None:
        """Add a [P, B] batch of real transitions: counts of seen entries grow, new ones are appended."""
        P, B = action.shape
        key = self.pair_keys(obs, action)
        entry = self.entry_keys(key, reward, next_obs, continuation).reshape(-1)
        unique, inverse, counts = torch.unique(entry, return_inverse=True, return_counts=True)
        first = torch.full_like(unique, entry.numel()).scatter_reduce_(
            0, inverse, torch.arange(entry.numel(), device=entry.device), "amin"
        )
        pos = torch.searchsorted(self.sorted_entry, unique).clamp_max(max(self.size - 1, 0))
        found = self.sorted_entry[pos] == unique if self.size else torch.zeros_like(unique, dtype=torch.bool)
        t = self.t
        t["count"].index_add_(0, self.by_entry[pos[found]], counts[found].to(t["count"].dtype))
        if found.all():
            self.recount()
            return None
        new, order = torch.sort(first[~found])  # flat [P * B] positions of each new entry's first occurrence
        member = torch.arange(P, device=entry.device).repeat_interleave(B)
        added = {
            "member": member[new],
            "key": key.reshape(-1)[new],
            "entry": entry[new],
            "count": counts[~found][order].to(t["count"].dtype),
            "reward": reward.reshape(-1)[new].to(torch.float32),
            "continuation": continuation.reshape(-1)[new].to(torch.float32),
            "next_obs": next_obs.reshape(P * B, -1)[new] > 0.5,
        }
        self.t = {k: torch.cat([t[k], added[k]]) for k in FIELDS}
        keep = keep_newest(self.t["member"], self.members, self.capacity)
        if not keep.all():
            self.t = {k: v[keep] for k, v in self.t.items()}
        self.reindex()
        return None

    def lookup(self, obs, action, u) -> tuple[torch.Tensor, torch.Tensor]:
        """(entry index [p, S] into the flat arrays, seen [p, S]) for one outcome draw per pair."""
        if self.size == 0:
            return torch.zeros_like(action), torch.zeros_like(action, dtype=torch.bool)
        lo, hi = group_ranges(self.sorted_key, self.pair_keys(obs, action))
        return self.by_key[sample_in_groups(self.cum, lo, hi, u)], hi > lo

    # -- the DynamicsModel interface ------------------------------------------------------------
    def start(self, obs):
        return obs

    def noise(self, length, members, starts, generator):
        """One uniform per step and state: which of the pair's outcomes (sample_in_groups)."""
        return torch.rand((length, members, starts), generator=generator, device=self.device)

    @torch.no_grad()
    def step(self, state, action, noise, members: slice | None = None) -> Step:
        """A drawn outcome of each seen pair; an unseen pair stays put with reward 0 and valid 0."""
        index, seen = self.lookup(state, action, noise)
        if self.size == 0:
            zeros = torch.zeros_like(action, dtype=state.dtype)
            return Step(state, zeros, torch.ones_like(zeros), seen)
        t = self.t
        next_state = torch.where(seen.unsqueeze(-1), t["next_obs"][index].to(state.dtype), state)
        reward = torch.where(seen, t["reward"][index], 0.0)
        continuation = torch.where(seen, t["continuation"][index], 1.0)
        return Step(next_state, reward, continuation, seen)

    def q_input(self, state):
        return state

    @torch.no_grad()
    def predict(self, obs, action) -> Prediction:
        """The outcome at the middle of the pair's cumulative counts (u = 1/2: the most frequent one when it
        holds more than half the pair's count), as logits of +-30; an unseen pair: logits 0, reward 0,
        continuation 1/2."""
        index, seen = self.lookup(obs, action, torch.full(action.shape, 0.5, device=obs.device))
        if self.size == 0:
            zeros = torch.zeros_like(action, dtype=obs.dtype)
            return Prediction(torch.zeros_like(obs), zeros, zeros + 0.5)
        t = self.t
        logits = torch.where(t["next_obs"][index], 30.0, -30.0) * seen.unsqueeze(-1)
        reward = torch.where(seen, t["reward"][index], 0.0)
        continuation = torch.where(seen, t["continuation"][index], 0.5)
        return Prediction(logits, reward, continuation)

    def acting_params(self) -> None:
        return None

    @torch.no_grad()
    def diagnostics(self, obs, action) -> dict:
        """table_entries: distinct transitions held per member; seen_fraction: held-out pairs in the table."""
        _, seen = self.lookup(obs, action, torch.zeros(action.shape, device=obs.device))
        return {"table_entries": self.entries_per_member(), "seen_fraction": seen.float().mean(-1).tolist()}

    def state_dict(self) -> dict[str, np.ndarray]:
        """The table's entries, in insertion order."""
        return {k: v.cpu().numpy().copy() for k, v in self.t.items()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.t = {k: torch.from_numpy(np.array(state[k])).to(self.device) for k in FIELDS}
        self.reindex()

"""RolloutEngine: batched imagined rollouts for every member at once.

From S start states per member, L steps: at each step the Q-network picks
actions by softmax over Q/temperature, the model steps all P x S states in one
batched call, and the transition is recorded with its weight. With c_j the
continuation probability and v_j the validity of step j (1 unless the model
could not produce the transition: an unseen pair in a table, an ensemble that
disagrees too much; modelserver/interface.py Step), the weight of step i is

    w_i = (v_0 ... v_i) * (c_0 ... c_{i-1})   episodic environments
    w_i = (v_0 ... v_i)                       continuing ones

so a rollout cut at step i trains on nothing from step i on. Output: [P, S*L]
transitions, start-major (rollout s, step i at index s*L + i). The engine also
keeps, per member, the fraction of rollout steps cut, 1 - mean_{s,i}(v_0 ... v_i)
(`take_cut_fraction`, for the model_diagnostics event).

All randomness of a rollout is drawn before its first step, in a few large
calls: Gumbel noise for the actions (argmax(Q/T + G) is a softmax(Q/T) sample)
and each model's own noise (see the models' `noise`). The per-step work is then
only network calls, which is what makes small-batch rollouts cheap.
"""

from __future__ import annotations

import torch
from mbgen.learner.dqn import BATCH_FIELDS
from mbgen.learner.latents import gumbel
from mbgen.learner.shards import ShardPool
from mbgen.modelserver.interface import DynamicsModel

FIELDS = BATCH_FIELDS  # an imagined batch is what one Q update reads


def softmax_sample(q: torch.Tensor, temperature: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Actions [P, S] ~ softmax(q / temperature[p]) via Gumbel-max."""
    return (q / temperature.view(-1, 1, 1) + gumbel(q.shape, generator, q.device)).argmax(-1)


class RolloutEngine:
    """Rollouts from start observations, all members batched; member shards run in parallel.

    Models declaring `member_parallel` step member ranges, so each worker of `shards` rolls out its
    own members with its own random generator (members are independent); other models run as one.
    """

    def __init__(
        self,
        model: DynamicsModel,
        q_net,
        length: int,
        temperature: torch.Tensor,
        episodic: bool,
        generator: torch.Generator | None,
        shards: ShardPool | None = None,
    ):
        self.model, self.q_net, self.length = model, q_net, length
        self.inv_temperature = (1.0 / temperature).view(-1, 1, 1)
        self.episodic = episodic
        members = temperature.shape[0]
        self.cut = torch.zeros(members, dtype=torch.float64, device=temperature.device)  # sum of cut fractions
        self.batches = 0  # rollout batches whose validity the model reported
        self.shards = shards if shards is not None and model.member_parallel else ShardPool(members, 1)
        if self.shards.workers == 1:
            self.generators = [generator]
        else:  # one stream per worker: generators are not shared between threads
            seed = int(torch.randint(0, 2**62, (1,), generator=generator).item()) if generator is not None else 0
            self.generators = [
                torch.Generator(device=temperature.device).manual_seed(seed + i) for i in range(self.shards.workers)
            ]

    def _shards(self, start_obs: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Every member shard's rollouts ([p, S, L, ...] fields), the cut fractions counted."""
        sharded = self.shards.workers > 1
        parts = self.shards.map(
            lambda m: self._run(start_obs[m], m if sharded else None, self.generators[self.shards.index(m)])
        )
        cuts = [part.pop("cut") for part in parts]
        if cuts[0] is not None:
            self.cut += torch.cat(cuts).to(self.cut)
            self.batches += 1
        return parts

    @torch.no_grad()
    def run(self, start_obs: torch.Tensor, out: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Imagined transitions [P, S*L, ...] from start observations [P, S, D] (written into `out` if given)."""
        P, S, L = start_obs.shape[0], start_obs.shape[1], self.length
        parts = self._shards(start_obs)
        for part in parts:
            part.pop("valid")
        if out is None:
            out = {k: torch.cat([part[k] for part in parts]).reshape(P, S * L, *parts[0][k].shape[3:]) for k in FIELDS}
            return out
        for m, part in zip(self.shards.slices, parts):
            for k, v in part.items():
                out[k][m].view(v.shape).copy_(v)
        return out

    def _run(self, start_obs: torch.Tensor, members: slice | None, generator) -> dict[str, torch.Tensor]:
        """One shard's rollouts: fields shaped [p, S, L, ...]."""
        model, L = self.model, self.length
        p, S = start_obs.shape[:2]
        kw = {"members": members} if members is not None else {}
        inv_temperature = self.inv_temperature if members is None else self.inv_temperature[members]
        state = model.start(start_obs)
        x = model.q_input(state)
        q = self.q_net(x, **kw)
        action_noise = gumbel((L, *q.shape), generator, q.device)
        model_noise = model.noise(L, p, S, generator)
        xs, actions, rewards, conts, valids = [x], [], [], [], []
        for i in range(L):
            if i:
                q = self.q_net(x, **kw)
            action = torch.addcmul(action_noise[i], q, inv_temperature).argmax(-1)
            state, reward, continuation, valid = model.step(state, action, model_noise[i], members)
            x = model.q_input(state)
            xs.append(x)
            actions.append(action)
            rewards.append(reward)
            conts.append(continuation)
            valids.append(valid)
        states = torch.stack(xs, dim=2)  # [p, S, L+1, W]
        cont = torch.stack(conts, dim=2)  # [p, S, L]
        if self.episodic:
            weight = torch.cumprod(torch.cat([torch.ones_like(cont[:, :, :1]), cont[:, :, :-1]], dim=2), dim=2)
        else:
            weight = torch.ones_like(cont)
        if any(v is not None for v in valids):
            ones = torch.ones_like(cont[:, :, 0])
            valid = torch.stack([ones if v is None else v.to(cont.dtype) for v in valids], dim=2)
            kept = torch.cumprod(valid, dim=2)
            weight = weight * kept
            cut = 1.0 - kept.mean(dim=(1, 2))
        else:
            cut = None
        return {
            "obs": states[:, :, :L],
            "action": torch.stack(actions, dim=2),
            "reward": torch.stack(rewards, dim=2),
            "next_obs": states[:, :, 1:],
            "continuation": cont,
            "weight": weight,
            "valid": valid if cut is not None else torch.ones_like(cont),  # [p, S, L] each step's validity
            "cut": cut,  # [p] fraction of steps cut, or None (the model reported no validity)
        }

    @torch.no_grad()
    def run_paths(self, start_obs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Rollouts as paths [P, S, L, ...] from start observations [P, S, D]: next_obs (the states after each
        step), action, reward, continuation and valid (value expansion: learner/training.py)."""
        parts = self._shards(start_obs)
        return {k: torch.cat([part[k] for part in parts]) for k in ("next_obs", "action", "reward", "continuation", "valid")}

    def take_cut_fraction(self) -> list[float] | None:
        """Per member, the mean fraction of rollout steps cut since the last call; None if nothing reported."""
        if not self.batches:
            return None
        out = (self.cut / self.batches).tolist()
        self.cut.zero_()
        self.batches = 0
        return out


def rollout(model, q_net, start_obs, length, temperature, episodic, generator, out=None):
    """One rollout with a throwaway engine (tests and tools)."""
    return RolloutEngine(model, q_net, length, temperature, episodic, generator).run(start_obs, out)

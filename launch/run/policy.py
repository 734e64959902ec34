"""Trained policies from a run directory: `load_policy(run).act(obs)`, and what `mbgen eval` prints.

    from mbgen import load_policy
    policy = load_policy("runs/my-run", member=0)     # greedy policy of member 0, final checkpoint
    action = policy.act(obs)                          # obs [obs_dim] -> int, or [B, obs_dim] -> [B]
    everyone = load_policy("runs/my-run", member=None)
    actions = everyone.act(obs)                       # obs [B, obs_dim] or [P, B, obs_dim] -> [P, B]

Every checkpoint is read by `read_checkpoint`, the one place that knows the
format: `checkpoints/learner-final.npz` (or another learner checkpoint) holds the
population's flat Q parameters under "q"; agents whose actors run a model network
(a latent agent's encoder, a planner's model) also need that network, the
model's `acting_params()` of the state in `checkpoints/model-final.npz`.

Latent agents act on a sampled latent, so their greedy actions depend on the
random generator; every other agent's are deterministic, and evaluating the
final checkpoint with the run's seeds reproduces the run's last evaluation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from mbgen.actors.acting import ActingPolicy
from mbgen.actors.evaluator import evaluate
from mbgen.envs.seeding import derive_seed
from mbgen.launch.run.results import load_run
from mbgen.learner.config import RunConfig
from mbgen.runtime.checkpoints import FINAL_MODEL

from mbgen import envs

FINAL_CHECKPOINT = "learner-final.npz"


@dataclass
class Checkpoint:
    path: str  # the learner checkpoint read
    updates: int  # Q updates it holds
    q: np.ndarray  # float32 flat Q parameters of every member (the learner's layout)
    model: np.ndarray | None  # float32 flat parameters of the actors' model network of every member, else None


def checkpoint_path(run_dir: str, checkpoint: str | None = None) -> str:
    """A learner checkpoint: a path, a file name inside RUN/checkpoints, or (None) the final one."""
    if checkpoint is None:
        path = os.path.join(run_dir, "checkpoints", FINAL_CHECKPOINT)
    elif os.path.exists(checkpoint):
        path = checkpoint
    else:
        path = os.path.join(run_dir, "checkpoints", checkpoint)
    if not os.path.exists(path):
        folder = os.path.join(run_dir, "checkpoints")
        there = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
        raise ValueError(
            f"checkpoint {checkpoint or FINAL_CHECKPOINT} not found in {folder}"
            + (f"; there: {', '.join(there)}" if there else " (the run wrote no checkpoints)")
        )
    return path


def read_checkpoint(run_dir: str, cfg: RunConfig, checkpoint: str | None = None) -> Checkpoint:
    """The policy parameters of a run: Q from a learner checkpoint and, for agents whose actors run a
    model network (a latent encoder, a planner's model), that network from the model server's final
    checkpoint, as the model server publishes it. The one reader of the checkpoint format."""
    path = checkpoint_path(run_dir, checkpoint)
    with np.load(path) as f:
        q, updates = f["q"].astype(np.float32), int(f["updates"])
    model = None
    if cfg.actor_model_numel():
        from mbgen.modelserver.interface import ModelContext, build_model

        model_path = os.path.join(run_dir, "checkpoints", FINAL_MODEL)
        if not os.path.exists(model_path):
            raise ValueError(f"{cfg.run.agent} acts through its model, and {model_path} does not exist")
        built = build_model(ModelContext(cfg, torch.device("cpu"), None))
        with np.load(model_path) as f:
            built.load_state_dict({k[len("model.") :]: f[k] for k in f.files if k.startswith("model.")})
        model = built.acting_params().detach().numpy().astype(np.float32)
    return Checkpoint(path, updates, q, model)


def acting_policy(cfg: RunConfig, ckpt: Checkpoint) -> ActingPolicy:
    """The evaluator's policy object for every member, holding the checkpoint's parameters."""
    generator = torch.Generator().manual_seed(derive_seed(cfg.member_seeds[0], "eval-latent"))
    policy = ActingPolicy(cfg, generator)
    if policy.q_store.flat.numel() != ckpt.q.size:
        raise ValueError(f"{ckpt.path} holds {ckpt.q.size} Q parameters; this run's network has {policy.q_store.total}")
    policy.q_store.flat.copy_(torch.from_numpy(ckpt.q))
    if policy.model_store is not None:
        policy.model_store.flat.copy_(torch.from_numpy(ckpt.model))
    return policy


def member_config(cfg: RunConfig, member: int) -> RunConfig:
    """A one-member configuration running member `member`'s seed, step size and temperature."""
    label = cfg.member_labels()[member]
    return cfg.replace(seeds=[label["seed"]], lr=label["lr"], temperature=label["temperature"])


def member_checkpoint(full: ActingPolicy, ckpt: Checkpoint, member: int) -> Checkpoint:
    """A checkpoint of one member: its slice of every tensor, in order (the layout of a P=1 store)."""
    q = full.q_store.member(member).numpy()
    model = full.model_store.member(member).numpy() if full.model_store is not None else None
    return Checkpoint(ckpt.path, ckpt.updates, q, model)


class Policy:
    """The greedy policy of one member (or of every member, `member=None`) of a trained run."""

    def __init__(self, run_dir: str, member: int | None = 0, checkpoint: str | None = None):
        cfg = load_run(run_dir).config
        if member is not None and not (isinstance(member, int) and 0 <= member < cfg.members):
            raise ValueError(f"member must be an integer in [0, {cfg.members - 1}] (or None for all), got {member!r}")
        self.run_dir, self.member = run_dir, member
        self.checkpoint = read_checkpoint(run_dir, cfg, checkpoint)
        self.label = cfg.member_labels()[member] if member is not None else None
        self.config = cfg  # the run's configuration
        policy = acting_policy(cfg, self.checkpoint)
        if member is not None:
            cfg = member_config(cfg, member)
            policy = acting_policy(cfg, member_checkpoint(policy, self.checkpoint, member))
        self._policy, self._cfg = policy, cfg
        self.obs_dim, self.num_actions = cfg.env_spec.obs_dim, cfg.env_spec.num_actions

    def _batch(self, obs) -> tuple[np.ndarray, tuple]:
        """obs as bool [P, B, D] for the acting policy, and the shape of the answer."""
        obs = np.asarray(obs)
        if obs.shape[-1:] != (self.obs_dim,):
            raise ValueError(f"obs must end with the observation size {self.obs_dim}, got shape {obs.shape}")
        P = self._cfg.members
        if self.member is not None:
            if obs.ndim > 2:
                raise ValueError(f"a one-member policy takes [obs_dim] or [B, obs_dim], got shape {obs.shape}")
            return obs.reshape(1, -1, self.obs_dim).astype(bool), obs.shape[:-1]
        if obs.ndim == 3 and obs.shape[0] != P:
            raise ValueError(f"obs [P, B, obs_dim] needs P = {P} members, got shape {obs.shape}")
        batch = obs.reshape(1, -1, self.obs_dim) if obs.ndim < 3 else obs
        batch = np.broadcast_to(batch, (P, batch.shape[1], self.obs_dim)).astype(bool)
        return batch, (P, *obs.shape[:-1]) if obs.ndim < 3 else obs.shape[:-1]

    def action_values(self, obs) -> np.ndarray:
        """The values [..., num_actions] the policy acts on for observations [..., obs_dim] (see `act` for the
        shapes): Q-values, or a planner's first-action values."""
        batch, shape = self._batch(obs)
        return self._policy.action_values(batch).numpy().reshape(*shape, self.num_actions)

    def act(self, obs):
        """Greedy actions: an int for one observation [obs_dim] of a one-member policy, else an array
        shaped like obs without its last axis ([P, ...] first for every member)."""
        batch, shape = self._batch(obs)
        actions = self._policy.greedy(batch).reshape(shape)
        return int(actions) if actions.ndim == 0 else actions


def load_policy(run_dir: str, member: int | None = 0, checkpoint: str | None = None) -> Policy:
    """The greedy policy of a trained run's member (None: every member, batched)."""
    return Policy(run_dir, member, checkpoint)


def evaluation_tag(cfg: RunConfig, updates: int) -> int:
    """The evaluation point whose episodes a checkpoint of `updates` updates replays: the last point
    the learner had reached exactly that many updates at (the final point when none matches)."""
    matching = [t for t in cfg.eval_points() if cfg.target_updates(t) == updates]
    return matching[-1] if matching else cfg.run.steps


def evaluate_run(
    run_dir: str, checkpoint: str | None = None, episodes: int = 0, env_params: dict | None = None
) -> dict:
    """Greedy scores of every member of a run, as its evaluator measures them (same seeds), on the
    run's environment or one with other parameters of the same observation and action sizes."""
    run = load_run(run_dir)
    cfg, rows = run.config, run.rows
    ckpt = read_checkpoint(run_dir, cfg, checkpoint)
    policy = acting_policy(cfg, ckpt)
    trained = cfg.env_spec
    try:
        other = envs.spec(cfg.run.env, **{**cfg.run.env_params, **(env_params or {})})
    except ValueError as error:
        raise ValueError(f"--env.*: {error}") from None
    target = cfg.replace(env_params=other.params, eval_episodes=episodes or cfg.learning.eval_episodes)
    if (other.obs_dim, other.num_actions) != (trained.obs_dim, trained.num_actions):
        raise ValueError(
            f"the policy was trained on {cfg.run.env} observations of {trained.obs_dim} features and "
            f"{trained.num_actions} actions; {cfg.run.env}("
            + ", ".join(f"{k}={v}" for k, v in other.params.items())
            + f") has {other.obs_dim} and "
            f"{other.num_actions}: choose parameters that keep both"
        )
    tag = evaluation_tag(cfg, ckpt.updates)
    scores = evaluate(target, policy, tag)
    recorded = {int(r["member"]): float(r["eval_return"]) for r in rows if int(r["env_steps"]) == tag}
    same_protocol = target.run.env_params == cfg.run.env_params and target.learning.eval_episodes == cfg.learning.eval_episodes
    return {
        "config": target,
        "checkpoint": ckpt,
        "env_steps": tag,
        "scores": scores,
        "recorded": [recorded.get(m) for m in range(cfg.members)] if same_protocol and recorded else None,
    }


def render_episode(policy: Policy, seed: int, env_params: dict | None = None, steps: int = 0):
    """One greedy episode of a one-member policy, as text frames: yields (step, frame, the action taken
    there or None after the last step, return so far)."""
    cfg = policy.config
    env = envs.make(cfg.run.env, 1, seed, **{**cfg.run.env_params, **(env_params or {})})
    obs = env.reset()
    total = 0.0
    for t in range(steps or cfg.learning.eval_steps):
        action = policy.act(obs[0])
        yield t, env.render_text(obs[0]), action, total
        obs, reward, terminal = env.transition(obs, np.array([action]), env.rng)
        total += float(reward[0])
        if env.episodic and terminal[0]:
            yield t + 1, env.render_text(obs[0]), None, total
            return
    yield steps or cfg.learning.eval_steps, env.render_text(obs[0]), None, total

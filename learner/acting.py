"""How actors and the evaluator choose actions: one declaration per way, which an agent names.

  QActing        on the Q-network's values of the state (of its latent, for latent agents)
  PlannedActing  on first-action values planned through the learned simple model at every step
                 (learner/planning.py): the model's parameters reach the actors as Q's do

Either way the behaviour policy is softmax over the values at the member's temperature and the
evaluation is greedy (learner/behaviour.py). A declaration says which model network the actors hold
(`model_numel`: parameters per member, 0 for none) and computes the values from the acting policy's
networks (actors/acting.py ActingPolicy).
"""

from __future__ import annotations

from dataclasses import dataclass

from mbgen.learner.shapes import simple_model_shapes


@dataclass(frozen=True)
class QActing:
    def model_numel(self, cfg) -> int:
        return 0

    def model_network(self, cfg, store):
        """The model network the actors run, declared in `store` (a ParamStore), or None."""
        return None

    def values(self, policy, x):
        """Action values [P, E, A] of what Q reads, x [P, E, W]."""
        return policy.q(x)


@dataclass(frozen=True)
class PlannedActing:
    def model_numel(self, cfg) -> int:
        env = cfg.env_spec
        return sum(s.numel for s in simple_model_shapes(env.obs_dim, env.num_actions, cfg.learning.hidden))

    def model_network(self, cfg, store):
        """The simple model's network, with the layout of the model server's SimpleModel store."""
        from mbgen.learner.networks import simple_model_net

        env = cfg.env_spec
        return simple_model_net(store, env.obs_dim, env.num_actions, cfg.learning.hidden)

    def values(self, policy, x):
        """First-action values [P, E, A] planned from observations x [P, E, D] (learner/planning.py)."""
        from mbgen.learner.planning import plan

        cfg, options = policy.cfg, policy.cfg.options
        return plan(
            policy.model_step,
            policy.q,
            x,
            cfg.env_spec.num_actions,
            options.plan_depth,
            cfg.learning.gamma,
            options.plan_samples,
            options.plan_iterations,
            policy.generator,
        )

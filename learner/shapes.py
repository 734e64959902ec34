"""Layer sizes of the population's MLPs: what every process must agree on to share parameters.

Plain integers, no tensors: the configuration, the CLI and the supervisor (which sizes the
shared parameter blocks) read shapes without loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MLPShape:
    sizes: tuple[int, ...]  # (in, hidden..., out)

    @property
    def layers(self) -> list[tuple[int, int]]:
        return list(zip(self.sizes[:-1], self.sizes[1:]))

    @property
    def numel(self) -> int:
        return sum(i * o + o for i, o in self.layers)

    def flops(self, batch: int) -> int:
        """Multiply-add FLOPs of one forward pass on `batch` inputs (one member)."""
        return 2 * batch * sum(i * o for i, o in self.layers)


def mlp_shape(inputs: int, hidden, outputs: int) -> MLPShape:
    return MLPShape((int(inputs), *map(int, hidden), int(outputs)))


def triple_head_shapes(inputs: int, hidden, main_out: int) -> list[MLPShape]:
    """The three MLPs a TripleHead (learner/networks.py) of these sizes stands for: the main head, then
    two scalar heads (the simple model: next-observation logits, reward, continuation)."""
    return [mlp_shape(inputs, hidden, out) for out in (main_out, 1, 1)]


def simple_model_shapes(obs_dim: int, num_actions: int, hidden) -> list[MLPShape]:
    """The simple model's three MLPs on [observation, one-hot action] (networks.simple_model_net)."""
    return triple_head_shapes(obs_dim + num_actions, hidden, obs_dim)

"""What the Q-network reads: the observation itself, or a latent sampled from an encoder (declarations).

An agent declares one `QInput` (learner/agents.py). ER, the simple, perfect,
ensemble and table agents read observations. Latent agents read a sample of
the encoder's latent distribution (PAPER.md section 3): categorical, F
features of C classes as straight-through one-hot samples (Q sees the F*C
flattened one-hots); Gaussian, F features sampled with mean and standard
deviation 2*sigmoid(x/2) + 0.1. The encoder is trained by the model server
and is declared here because actors and the evaluator run it too; the sampling maths is in
learner/latents.py (this module loads no torch, so the configuration and the CLI stay light).
"""

from __future__ import annotations

from dataclasses import dataclass

from mbgen.learner.shapes import MLPShape, mlp_shape


class ObservationInput:
    """Q reads the observation: no encoder."""

    def width(self, options, obs_dim: int) -> int:
        return obs_dim

    def encoder_shape(self, options, hidden: list[int], obs_dim: int) -> MLPShape | None:
        return None

    def encode(self, options, obs, encoder, generator):
        """What Q reads of observations [.., D]: the observations."""
        return obs


@dataclass(frozen=True)
class LatentInput:
    """Q reads a latent sampled from an encoder MLP of the observation; `options` are the agent's
    LatentOptions (latent_features F, latent_classes C)."""

    categorical: bool  # True: F features of C classes (one-hot samples); False: F Gaussian features

    def width(self, options, obs_dim: int) -> int:
        F, C = options.latent_features, options.latent_classes
        return F * C if self.categorical else F

    def head_width(self, options) -> int:
        """Outputs of a network that parameterises the latent distribution (logits, or mean and std)."""
        F, C = options.latent_features, options.latent_classes
        return F * C if self.categorical else 2 * F

    def encoder_shape(self, options, hidden: list[int], obs_dim: int) -> MLPShape | None:
        return mlp_shape(obs_dim, hidden, self.head_width(options))

    def sample(self, options, head, generator):
        """A latent sample from an encoder's outputs [.., head_width] (learner/latents.py)."""
        from mbgen.learner.latents import MIN_STD, categorical_sample, gaussian_params, gaussian_sample

        if self.categorical:
            return categorical_sample(head, options.latent_classes, generator)[0]
        mu, std = gaussian_params(head, MIN_STD)
        return gaussian_sample(mu, std, generator)

    def encode(self, options, obs, encoder, generator):
        """What Q reads of observations [.., D]: a latent sampled from the encoder's distribution."""
        return self.sample(options, encoder(obs), generator)


QInput = ObservationInput | LatentInput

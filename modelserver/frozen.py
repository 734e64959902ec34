"""A model frozen at a checkpoint: rollouts of a fixed model, Q trained from scratch (the paper's Figure 4, right).

`mbgen run --frozen-model RUN/checkpoints/model-final.npz` loads the parameters a
run's model server exported and never trains them: every update rolls out the
same model. The checkpoint must come from the same agent, environment size and
network (the same parameters per member); it holds either one model per member
of this run (member m rolls out model m) or a single model every member uses.
"""

from __future__ import annotations

import numpy as np
import torch
from mbgen.modelserver.interface import DynamicsModel


def frozen_params(path: str, members: int, per_member: int) -> np.ndarray:
    """The flat member-major parameters [members * per_member] stored in a model checkpoint."""
    try:
        with np.load(path) as data:
            params = data["model.params"] if "model.params" in data.files else None
    except (OSError, ValueError) as error:
        raise ValueError(f"frozen_model: cannot read {path}: {error}") from None
    if params is None:
        raise ValueError(f"frozen_model: {path} holds no trained model parameters (model.params)")
    if params.size == members * per_member:
        return params
    if params.size == per_member:  # one model for every member
        return np.tile(params, members)
    stored = params.size / per_member
    raise ValueError(
        f"frozen_model: {path} holds {params.size:,} model parameters ({stored:g} models of this run's size, "
        f"{per_member:,} each); this run needs 1 or {members} (same agent, environment size and hidden sizes)"
    )


@torch.no_grad()
def freeze(model: DynamicsModel, path: str, members: int) -> None:
    """Load a checkpoint's model parameters into `model` (which is then never trained)."""
    if model.store is None or not model.learned:
        raise ValueError(
            "frozen_model: the agent's model has no parameters trained by gradient; "
            "freeze one that has (simple, ensemble, latent)"
        )
    flat = model.store.flat
    flat.copy_(torch.from_numpy(frozen_params(path, members, flat.numel() // members)).to(flat.device, flat.dtype))


def check_frozen(cfg) -> None:
    """Refuse, before a run starts, a frozen model that does not fit the run (raises ValueError)."""
    from mbgen.modelserver.interface import ModelContext, build_model

    model = build_model(ModelContext(cfg, torch.device("cpu"), torch.Generator()))
    freeze(model, cfg.options.frozen_model, cfg.members)

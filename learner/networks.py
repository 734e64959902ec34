"""Population-batched MLPs: every member's weights in one flat [P, N] tensor.

Layer l of member p uses W_l[p] ([in, out]) and b_l[p] ([out]), views into row
p of the flat buffer, so a forward pass is one baddbmm per layer for all P
members, and publishing, copying or checkpointing a network is one array copy.
Initialisation follows Haiku's Linear default (the authors' code): weights from
a normal with std 1/sqrt(fan_in) truncated at two standard deviations, biases
zero, each member drawn from its own seed.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


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


def mlp_shape(inputs: int, hidden: tuple[int, ...] | list[int], outputs: int) -> MLPShape:
    return MLPShape((int(inputs), *map(int, hidden), int(outputs)))


def layer_views(flat: torch.Tensor, shape: MLPShape) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(W [P, in, out], b [P, 1, out]) views of a flat [P, N] parameter tensor."""
    P, views, off = flat.shape[0], [], 0
    for i, o in shape.layers:
        w = flat[:, off : off + i * o].view(P, i, o)
        off += i * o
        b = flat[:, off : off + o].view(P, 1, o)
        off += o
        views.append((w, b))
    return views


def mlp_forward(views: list[tuple[torch.Tensor, torch.Tensor]], x: torch.Tensor) -> torch.Tensor:
    """x [P, B, in] -> [P, B, out]: ELU between layers, linear output."""
    last = len(views) - 1
    for k, (w, b) in enumerate(views):
        x = torch.baddbmm(b, x, w)
        if k < last:
            x = F.elu(x)
    return x


def init_flat(shape: MLPShape, seeds: list[int], device: str | torch.device = "cpu") -> torch.Tensor:
    """Haiku-style initialisation, member p from torch.Generator seeded with seeds[p]."""
    flat = torch.zeros(len(seeds), shape.numel)
    for p, seed in enumerate(seeds):
        gen = torch.Generator().manual_seed(int(seed))
        off = 0
        for i, o in shape.layers:
            std = 1.0 / i**0.5
            w = torch.empty(i * o)
            torch.nn.init.trunc_normal_(w, mean=0.0, std=std, a=-2 * std, b=2 * std, generator=gen)
            flat[p, off : off + i * o] = w
            off += i * o + o
    return flat.to(device)


class PopulationMLP:
    """An MLP per member with its parameters in one flat tensor (optionally trainable)."""

    def __init__(self, shape: MLPShape, flat: torch.Tensor):
        self.shape = shape
        self.flat = flat
        self.views = layer_views(flat, shape)

    @classmethod
    def create(cls, shape: MLPShape, seeds: list[int], device="cpu", trainable: bool = True) -> "PopulationMLP":
        return cls(shape, init_flat(shape, seeds, device).requires_grad_(trainable))

    @property
    def members(self) -> int:
        return self.flat.shape[0]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return mlp_forward(self.views, x)

    def load_(self, flat: torch.Tensor) -> None:
        with torch.no_grad():
            self.flat.copy_(flat)


class NetworkPack:
    """Several population MLPs sharing one flat [P, N] parameter tensor (one optimiser step for all).

    Network `name` of member p is initialised from derive_seed(seeds[p], name).
    """

    def __init__(self, shapes: dict[str, MLPShape], seeds: list[int], device="cpu", trainable: bool = True):
        from envs.seeding import derive_seed

        self.shapes = dict(shapes)
        self.offsets: dict[str, tuple[int, int]] = {}
        parts, off = [], 0
        for name, shape in self.shapes.items():
            parts.append(init_flat(shape, [derive_seed(s, name) for s in seeds]))
            self.offsets[name] = (off, off + shape.numel)
            off += shape.numel
        self.flat = torch.cat(parts, dim=1).to(device).requires_grad_(trainable)
        self.nets = {name: PopulationMLP(shape, self.slice(name)) for name, shape in self.shapes.items()}

    def slice(self, name: str) -> torch.Tensor:
        a, b = self.offsets[name]
        return self.flat[:, a:b]

    def __getitem__(self, name: str) -> PopulationMLP:
        return self.nets[name]

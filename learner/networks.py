"""Population-batched networks on one flat parameter buffer, with hand-written backward passes.

ParamStore keeps every parameter tensor of a population in one 1-D buffer, each
tensor a contiguous block shaped (P, *member_shape), so a layer of all P members
(and all 3 heads of a fused network) is a single batched matmul, any range of
members is a contiguous view (what member-parallel workers take, see
learner/shards.py), and publishing, checkpointing or an optimiser step is one
pass over one buffer. A second buffer of the same layout holds gradients.

MLP: sizes (in, hidden..., out), ELU between layers, linear output.
TripleHead: three MLPs on the same input, one wide "main" output and two scalar
outputs (the simple model's next-observation, reward and continuation nets; the
latent model's transition, reward and continuation nets), run as one call: the
hidden layers of the three heads are batched together as 3P networks.

Both offer forward(x) (differentiable with autograd when the store is
trainable) and, for the hot paths, forward_cached(x) / backward(cache, grad):
the same maths with the gradient written straight into the store's gradient
buffer, and no autograd graph. Initialisation follows Haiku's Linear default
(the authors' code): weights from a normal with std 1/sqrt(fan_in) truncated at
two standard deviations, biases zero; member p's slice of tensor t is drawn
from derive_seed(seeds[p], t).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from mbgen.envs.seeding import derive_seed
from mbgen.learner.shapes import MLPShape

LOG2E = 1.0 / math.log(2.0)
FAST_ELU_MIN = 8192  # below this many elements one F.elu call beats five cheap ones


def elu(x: torch.Tensor) -> torch.Tensor:
    """ELU. On large tensors without autograd it is computed as max(x, 2^(min(x, 0) log2 e) - 1),
    which equals F.elu up to 6e-8 (float32 rounding of e^x near 1) and is twice as fast here:
    this CPU's exp2 kernel is three times faster than its exp."""
    if x.numel() < FAST_ELU_MIN or (torch.is_grad_enabled() and x.requires_grad):
        return F.elu(x)
    neg = torch.clamp(x, max=0.0).mul_(LOG2E).exp2_().sub_(1.0)
    return torch.maximum(x, neg, out=neg)


class ParamStore:
    """Flat parameters (and gradients) of a population of networks, tensor by tensor.

    Tensor t is one contiguous block shaped (P, *member_shape), so member p's slice of
    any tensor, and any range of members, is a contiguous view.
    """

    def __init__(self, members: int, seeds: list[int], device="cpu"):
        if len(seeds) != members:
            raise ValueError("one seed per member")
        self.members, self.seeds, self.device = members, list(seeds), torch.device(device)
        self.specs: dict[str, tuple[int, ...]] = {}  # name -> member_shape
        self.offsets: dict[str, tuple[int, int]] = {}
        self.total = 0
        self.flat: torch.Tensor | None = None
        self.grad: torch.Tensor | None = None
        self._leaves: dict[str, torch.Tensor] | None = None
        self.generation = 0  # bumped when views change meaning (autograd leaves), so networks re-cache

    def declare(self, name: str, member_shape: tuple[int, ...]) -> None:
        if self.flat is not None:
            raise RuntimeError("declare every tensor before build()")
        if name in self.specs:
            raise ValueError(f"tensor {name} declared twice")
        n = self.members
        for d in member_shape:
            n *= d
        self.specs[name] = tuple(member_shape)
        self.offsets[name] = (self.total, self.total + n)
        self.total += n

    def shape(self, name: str) -> tuple[int, ...]:
        return (self.members, *self.specs[name])

    def build(self) -> "ParamStore":
        """Allocate and initialise (weights Haiku-style, biases zero)."""
        flat = torch.zeros(self.total)
        for name, member_shape in self.specs.items():
            if name.split(".")[-1].startswith("b"):
                continue
            a, b = self.offsets[name]
            block = flat[a:b].view(self.shape(name))
            std = 1.0 / member_shape[-2] ** 0.5  # fan-in
            for p, seed in enumerate(self.seeds):
                gen = torch.Generator().manual_seed(derive_seed(seed, name))
                values = torch.empty(member_shape)
                torch.nn.init.trunc_normal_(values, 0.0, std, -2 * std, 2 * std, generator=gen)
                block[p].copy_(values)
        self.flat = flat.to(self.device)
        self.grad = torch.zeros_like(self.flat)
        return self

    def view(self, name: str) -> torch.Tensor:
        if self._leaves is not None:
            return self._leaves[name]
        a, b = self.offsets[name]
        return self.flat[a:b].view(self.shape(name))

    def grad_view(self, name: str) -> torch.Tensor:
        a, b = self.offsets[name]
        return self.grad[a:b].view(self.shape(name))

    def range_of(self, prefix: str) -> tuple[int, int]:
        """The contiguous span of every tensor named prefix.* (declared together)."""
        spans = sorted(v for k, v in self.offsets.items() if k.startswith(prefix + "."))
        if any(spans[i][1] != spans[i + 1][0] for i in range(len(spans) - 1)):
            raise ValueError(f"tensors {prefix}.* are not contiguous")
        return spans[0][0], spans[-1][1]

    def per_element(self, values: torch.Tensor) -> torch.Tensor:
        """Expand a per-member [P] tensor to one value per parameter (e.g. step sizes)."""
        out = torch.empty(self.total, device=values.device, dtype=values.dtype)
        for name, member_shape in self.specs.items():
            a, b = self.offsets[name]
            shape = [self.members] + [1] * len(member_shape)
            out[a:b] = values.view(shape).expand(self.shape(name)).reshape(-1)
        return out

    def member(self, p: int) -> torch.Tensor:
        """Member p's parameters, tensor by tensor, as one vector (for tests and inspection)."""
        return torch.cat([self.view(n)[p].reshape(-1) for n in self.specs])

    @property
    def autograd(self) -> bool:
        return self._leaves is not None

    def enable_autograd(self) -> "ParamStore":
        """Make every tensor view an autograd leaf (for networks without a hand-written backward).

        Gradients then come back per tensor (`autograd_backward`), so no zero-filled copy of the
        whole buffer is made per tensor, as autograd would for views of one flat leaf.
        """
        self._leaves = None
        self._leaves = {n: self.view(n).requires_grad_(True) for n in self.specs}
        self.generation += 1
        return self

    def autograd_backward(self, loss: torch.Tensor) -> None:
        grads = torch.autograd.grad(loss, list(self._leaves.values()))
        with torch.no_grad():
            for name, g in zip(self._leaves, grads):
                self.grad_view(name).copy_(g)


NARROW = 16  # MKL is slow for GEMMs with few output columns: compute those transposed


def linear(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """h [N, B, in] @ w [N, in, out] + b [N, 1, out].

    A 2-D GEMM when N == 1 (so it uses every thread); for narrow outputs (Q-values, scalar heads)
    the transposed product w^T h^T, which MKL runs several times faster, returned as a view.
    """
    if w.shape[-1] <= NARROW:
        if h.shape[0] == 1:
            return torch.addmm(b[0].t(), w[0].t(), h[0].t()).t().unsqueeze(0)
        return torch.baddbmm(b.transpose(1, 2), w.transpose(1, 2), h.transpose(1, 2)).transpose(1, 2)
    if h.shape[0] == 1:
        return torch.addmm(b[0], h[0], w[0]).unsqueeze(0)
    return torch.baddbmm(b, h, w)


def weight_grad_into(h: torch.Tensor, g: torch.Tensor, out: torch.Tensor) -> None:
    """out [N, in, o] = h^T g for layer inputs h [N, B, in] and output gradients g [N, B, o]."""
    if out.shape[-1] <= NARROW:  # (g^T h)^T: the fast orientation for narrow layers
        if h.shape[0] == 1:
            out[0].copy_(torch.mm(g[0].t(), h[0]).t())
        else:
            out.copy_(torch.bmm(g.transpose(1, 2), h).transpose(1, 2))
        return
    if h.shape[0] == 1:
        torch.mm(h[0].t(), g[0], out=out[0])
    else:
        torch.bmm(h.transpose(1, 2), g, out=out)


def _matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.mm(a[0], b[0]).unsqueeze(0) if a.shape[0] == 1 else torch.bmm(a, b)


def elu_grad_(g: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """g * elu'(z) from the activation h = elu(z): 1 where h > 0, h + 1 elsewhere (in place on g)."""
    return g.mul_(h.clamp(max=0.0).add_(1.0))


class MLP:
    """A population MLP: x [p, B, in] -> [p, B, out] for all members or a member range."""

    def __init__(self, store: ParamStore, prefix: str, shape: MLPShape):
        self.store, self.prefix, self.shape = store, prefix, shape
        for k, (i, o) in enumerate(shape.layers):
            store.declare(f"{prefix}.w{k}", (i, o))
            store.declare(f"{prefix}.b{k}", (1, o))
        self._cache: dict = {}

    def _views(self, members: slice | None, grads: bool):
        key = (members.start, members.stop) if members is not None else None, grads, self.store.generation
        if key not in self._cache:
            s, n = self.store, len(self.shape.layers)
            get = s.grad_view if grads else s.view
            sel = (lambda t: t[members]) if members is not None else (lambda t: t)  # noqa: E731
            self._cache[key] = [(sel(get(f"{self.prefix}.w{k}")), sel(get(f"{self.prefix}.b{k}"))) for k in range(n)]
        return self._cache[key]

    def params(self, members: slice | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return self._views(members, False)

    def grads(self, members: slice | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return self._views(members, True)

    def forward(self, x: torch.Tensor, params=None, members: slice | None = None) -> torch.Tensor:
        params = params or self.params(members)
        last = len(params) - 1
        for k, (w, b) in enumerate(params):
            x = linear(x, w, b)
            if k < last:
                x = elu(x)
        return x

    __call__ = forward

    @torch.no_grad()
    def forward_cached(self, x: torch.Tensor, members: slice | None = None):
        """Output and the input of every layer (what backward needs)."""
        inputs, params = [x], self.params(members)
        last = len(params) - 1
        for k, (w, b) in enumerate(params):
            x = linear(x, w, b)
            if k < last:
                x = elu(x)
                inputs.append(x)
        return x, inputs

    @torch.no_grad()
    def backward(
        self, inputs: list[torch.Tensor], grad_out: torch.Tensor, grad_input: bool = False, members: slice | None = None
    ):
        """Write d loss / d params into the store's gradient buffer; optionally return d loss / d x."""
        g, params, grads = grad_out, self.params(members), self.grads(members)
        for k in range(len(inputs) - 1, -1, -1):
            (w, _), (gw, gb) = params[k], grads[k]
            weight_grad_into(inputs[k], g, gw)
            torch.sum(g, dim=1, keepdim=True, out=gb)
            if k > 0 or grad_input:
                g = _matmul(g, w.transpose(1, 2))
                if k > 0:
                    elu_grad_(g, inputs[k])
        return g if grad_input else None


class TripleHead:
    """Three MLPs on one input, batched: main head [.., main_out], and two scalar heads.

    forward(x [p, B, in]) -> (main [p, B, main_out], side [2, p, B]). Parameters are member-major
    ([P, 3, in, out] for the hidden layers), so the 3 heads of p members run as one batched
    matmul over 3p networks, and any member range is a contiguous slice.
    """

    HEADS = 3

    def __init__(self, store: ParamStore, prefix: str, inputs: int, hidden, main_out: int):
        self.store, self.prefix = store, prefix
        self.sizes = (int(inputs), *map(int, hidden))
        self.main_out = int(main_out)
        for k, (i, o) in enumerate(zip(self.sizes[:-1], self.sizes[1:])):
            store.declare(f"{prefix}.w{k}", (self.HEADS, i, o))
            store.declare(f"{prefix}.b{k}", (self.HEADS, 1, o))
        h = self.sizes[-1]
        store.declare(f"{prefix}.wmain", (h, self.main_out))
        store.declare(f"{prefix}.bmain", (1, self.main_out))
        store.declare(f"{prefix}.wside", (self.HEADS - 1, h, 1))
        store.declare(f"{prefix}.bside", (self.HEADS - 1, 1, 1))
        self._cache: dict = {}

    @property
    def depth(self) -> int:
        return len(self.sizes) - 1

    def _views(self, members: slice | None, grads: bool):
        def build():
            get = self.store.grad_view if grads else self.store.view
            sel = (lambda t: t[members]) if members is not None else (lambda t: t)  # noqa: E731
            merge = lambda t: sel(t).reshape(-1, *t.shape[2:])  # noqa: E731  [p, 3, ...] -> [3p, ...]
            p = self.prefix
            trunk = [(merge(get(f"{p}.w{k}")), merge(get(f"{p}.b{k}"))) for k in range(self.depth)]
            heads = (sel(get(f"{p}.wmain")), sel(get(f"{p}.bmain")), merge(get(f"{p}.wside")), merge(get(f"{p}.bside")))
            return trunk, heads

        if self.store.autograd:  # reshaped views of autograd leaves must be rebuilt per graph
            return build()
        key = (members.start, members.stop) if members is not None else None, grads, self.store.generation
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    def _spread(self, x: torch.Tensor) -> torch.Tensor:
        p, B, n = x.shape
        return x.unsqueeze(1).expand(p, self.HEADS, B, n).reshape(p * self.HEADS, B, n)

    def _outputs(self, top: torch.Tensor, heads):
        """Main and side outputs from the last hidden activations top [p, 3, B, H]."""
        p, _, B, H = top.shape
        wm, bm, ws, bs = heads
        main = linear(top[:, 0], wm, bm)
        side = linear(top[:, 1:].reshape(2 * p, B, H), ws, bs).reshape(p, 2, B).transpose(0, 1)
        return main, side

    def forward(self, x: torch.Tensor, members: slice | None = None):
        p, B = x.shape[:2]
        trunk, heads = self._views(members, False)
        h = self._spread(x)
        for w, b in trunk:
            h = elu(linear(h, w, b))
        return self._outputs(h.view(p, self.HEADS, B, -1), heads)

    __call__ = forward

    @torch.no_grad()
    def forward_cached(self, x: torch.Tensor, members: slice | None = None):
        p, B = x.shape[:2]
        trunk, heads = self._views(members, False)
        h = self._spread(x)
        inputs = [h]
        for k, (w, b) in enumerate(trunk):
            h = elu(linear(h, w, b))
            if k < self.depth - 1:
                inputs.append(h)
        top = h.view(p, self.HEADS, B, -1)
        main, side = self._outputs(top, heads)
        return main, side, (inputs, top)

    @torch.no_grad()
    def backward(self, cache, grad_main: torch.Tensor, grad_side: torch.Tensor, members: slice | None = None) -> None:
        """Gradients into the store from d loss / d main [p, B, M] and d loss / d side [2, p, B]."""
        inputs, top = cache
        p, _, B, H = top.shape
        (trunk, (wm, _, ws, _)), (grads, (gwm, gbm, gws, gbs)) = self._views(members, False), self._views(members, True)
        top_side = top[:, 1:].reshape(2 * p, B, H)
        g_side = grad_side.transpose(0, 1).reshape(2 * p, B, 1)
        weight_grad_into(top[:, 0], grad_main, gwm)
        torch.sum(grad_main, dim=1, keepdim=True, out=gbm)
        weight_grad_into(top_side, g_side, gws)
        torch.sum(g_side, dim=1, keepdim=True, out=gbs)
        g = torch.empty_like(top)
        g[:, 0] = _matmul(grad_main, wm.transpose(1, 2))
        g[:, 1:] = torch.bmm(g_side, ws.transpose(1, 2)).view(p, 2, B, H)
        elu_grad_(g, top)
        g = g.view(p * self.HEADS, B, H)
        for k in range(self.depth - 1, -1, -1):
            weight_grad_into(inputs[k], g, grads[k][0])
            torch.sum(g, dim=1, keepdim=True, out=grads[k][1])
            if k > 0:
                g = elu_grad_(_matmul(g, trunk[k][0].transpose(1, 2)), inputs[k])


def with_action(x: torch.Tensor, action: torch.Tensor, num_actions: int) -> torch.Tensor:
    """[P, B, W] and [P, B] -> [P, B, W + A]: the input of every (state, action) network."""
    return torch.cat([x, F.one_hot(action, num_actions).to(x.dtype)], dim=-1)


def simple_model_net(store: ParamStore, obs_dim: int, num_actions: int, hidden) -> TripleHead:
    """The simple model's network (next-observation logits, reward, continuation logit on [obs, one-hot
    action]): one layout for the model server's SimpleModel and a planner's copy in the actors."""
    return TripleHead(store, "model", obs_dim + num_actions, hidden, obs_dim)

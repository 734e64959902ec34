"""The CUDA path against the CPU path: the same maths within float32 tolerance, and lock-step runs that
repeat on the GPU. Marked `gpu`; skipped on machines without CUDA (CI has none)."""

import os

import pytest
import torch
from helpers import mbgen, metrics, tiny_run
from mbgen.learner.config import RunConfig
from mbgen.learner.dqn import DQN
from mbgen.learner.losses import q_loss, td_targets
from mbgen.learner.shapes import mlp_shape
from mbgen.modelserver.interface import ModelContext, build_model

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
TOLERANCE = dict(rtol=1e-4, atol=1e-5)


def batch(device, members=4, size=320, obs_dim=64, actions=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = dict(
        obs=(torch.rand(members, size, obs_dim, generator=g) < 0.3).float(),
        action=torch.randint(0, actions, (members, size), generator=g),
        reward=-torch.ones(members, size),
        next_obs=(torch.rand(members, size, obs_dim, generator=g) < 0.3).float(),
        continuation=(torch.rand(members, size, generator=g) < 0.9).float(),
        weight=torch.rand(members, size, generator=g),
    )
    return {k: v.to(device) for k, v in out.items()}


def test_losses_agree():
    cpu, cuda = batch("cpu"), batch("cuda")
    q = torch.randn(4, 320, 5, generator=torch.Generator().manual_seed(1))
    for b, dev in ((cpu, "cpu"), (cuda, "cuda")):
        b["target"] = td_targets(q.to(dev), b["reward"], b["continuation"], 0.9)
        b["loss"] = q_loss(q.to(dev), b["action"], b["target"], b["weight"])
    torch.testing.assert_close(cuda["loss"].cpu(), cpu["loss"], **TOLERANCE)


def test_dqn_updates_agree():
    shape = mlp_shape(64, [200, 200, 200], 5)
    seeds, lr = [0, 1, 2, 3], [1e-4, 2e-4, 1e-4, 5e-5]
    on = {dev: DQN(shape, seeds, lr, device=dev) for dev in ("cpu", "cuda")}
    torch.testing.assert_close(on["cuda"].flat.cpu(), on["cpu"].flat)  # the same initialisation
    for step in range(5):
        losses = {dev: dqn.update(**batch(dev, seed=step)) for dev, dqn in on.items()}
        torch.testing.assert_close(losses["cuda"].cpu(), losses["cpu"], **TOLERANCE)
    torch.testing.assert_close(on["cuda"].flat.cpu(), on["cpu"].flat, **TOLERANCE)


@pytest.mark.parametrize("agent", ["simple", "latent-cat", "latent-gauss"])
def test_model_updates_and_predictions_agree(agent):
    cfg = RunConfig.build(agent=agent, env="procmaze", env_params={"grid_size": 4}, seeds=[0, 1]).resolved()
    models = {
        dev: build_model(ModelContext(cfg, torch.device(dev), torch.Generator(dev).manual_seed(0)))
        for dev in ("cpu", "cuda")
    }
    torch.testing.assert_close(models["cuda"].store.flat.cpu(), models["cpu"].store.flat)
    for dev, model in models.items():
        b = batch(dev, members=2, size=32)
        model.loss = model.train_step(b["obs"], b["action"], b["reward"], b["next_obs"], b["continuation"])
        model.prediction = model.predict(b["obs"], b["action"])
    if agent == "simple":  # the latent models sample their latents: equal losses need equal draws
        torch.testing.assert_close(models["cuda"].loss.cpu(), models["cpu"].loss, **TOLERANCE)
        torch.testing.assert_close(models["cuda"].store.flat.cpu(), models["cpu"].store.flat, **TOLERANCE)
        for a, b in zip(models["cuda"].prediction, models["cpu"].prediction):
            torch.testing.assert_close(a.cpu(), b, **TOLERANCE)


@pytest.mark.slow
def test_lock_step_runs_repeat_on_the_gpu(tmp_path):
    runs = []
    for name in ("a", "b"):
        out = str(tmp_path / name)
        done = mbgen("run", *tiny_run("simple"), "--tolerance", "0", "--device", "cuda", "--out", out)
        assert done.returncode == 0, done.stderr
        runs.append(sorted((r["env_steps"], r["member"], r["eval_return"]) for r in metrics(out)))
        assert os.path.exists(os.path.join(out, "summary.json"))
    assert runs[0] == runs[1]

"""Run as a script: 300 Q updates of 2 members in 2 shards, the shards' threads at once and one
after another; prints the two parameter digests. A fresh interpreter per environment, because
MKL reads its reproducibility mode once (tests/test_learner.py)."""

import hashlib

import torch
from mbgen.learner.dqn import DQN
from mbgen.learner.shapes import mlp_shape
from mbgen.learner.shards import ShardPool


class OneAfterAnother(ShardPool):
    def map(self, fn):
        return [fn(members) for members in self.slices]


def digest(serial: bool) -> str:
    torch.set_num_threads(1)  # as the learner with 2 members on 2 cores: 2 workers of one thread
    dqn = DQN(mlp_shape(20, [64, 64, 64], 5), [3, 4], [3e-3, 3e-3], gamma=0.9, target_period=10, workers=2)
    if serial:
        dqn.shards = OneAfterAnother(2, 2)
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        obs, next_obs = torch.rand(2, 32, 20, generator=g), torch.rand(2, 32, 20, generator=g)
        action, reward = torch.randint(0, 5, (2, 32), generator=g), torch.rand(2, 32, generator=g)
        dqn.update(obs, action, reward, next_obs, torch.ones(2, 32))
    return hashlib.sha256(dqn.flat.numpy().tobytes()).hexdigest()


if __name__ == "__main__":
    print(digest(serial=False), digest(serial=True))

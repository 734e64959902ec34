"""Learning: the DQN every agent shares, its networks and optimiser, and the agent declarations.

agents.py    one AgentSpec per agent (model, what Q reads, tuned defaults): asked, never compared by name
config.py    RunConfig, the one flat configuration of a run
networks.py  population-batched MLPs on one flat parameter buffer, hand-written backward passes
losses.py, optim.py, dqn.py   the TD loss, Adam with decoupled decay, the DQN update (plain tensor functions)
qinput.py, behaviour.py       what Q reads (observations or latents), how a policy acts on Q
params.py    versioned parameter blocks (shared memory) and ZeroMQ publishing for remote actors
process.py   the learner process: updates at the enforced ratio, publishing, evaluation snapshots
"""

"""Learning: the DQN every agent shares, its networks and optimiser, and the agent declarations.

agents.py    one AgentSpec per agent (what Q trains on, how actors act, the model, options): asked,
             never compared by name
options.py   each agent's own options (the [options] config section)
training.py  what Q trains on and how its target is formed: replay, imagined, value-expansion batches
acting.py    how actors choose actions: on Q, or planning through the model (planning.py)
expansion.py, planning.py   MVE and STEVE targets, decision-time search (plain tensor functions)
config.py    RunConfig in sections; check.py its validation helpers
networks.py, shapes.py      population-batched MLPs on one flat parameter buffer, their layer sizes
losses.py, optim.py, dqn.py the TD loss, Adam with decoupled decay, the DQN update (plain tensor functions)
qinput.py, latents.py, behaviour.py   what Q reads (observations or latents), how a policy acts on values
step.py      ReplayStep: one ER update (the learner and the bench call it)
process.py   the learner process: updates at the enforced ratio, publishing, evaluation snapshots
"""

"""The model server: trains the agent's dynamics model and serves batched imagined rollouts.

interface.py the DynamicsModel protocol every model implements, and build_model
models.py    the paper's simple, latent and perfect models
losses.py    model losses as plain functions
rollout.py   RolloutEngine: L-step imagined rollouts of P x S states under the softmax policy
step.py      ModelStep: one model update and one imagined batch (the process and the bench call it)
process.py   the model-server process, one imagined batch per Q update
diagnostics.py  held-out accuracy and PanFlute's reward-smoothing probe (Figure 4)
"""

"""The model server: trains the agent's dynamics model and does the agent's work with it.

interface.py the DynamicsModel protocol every model implements, and build_model
models.py    the paper's simple, latent and perfect models
losses.py    model losses as plain functions
rollout.py   RolloutEngine: L-step imagined rollouts of P x S states under the softmax policy
ensemble.py, table.py   MBPO's bootstrapped ensemble (and its per-model paths for STEVE), tabular Dyna
work.py      the work per Q update: train the model, then imagine transitions, value-expansion paths,
             or nothing (a planner's model); the process and the bench call it
process.py   the model-server process, one batch per Q update
diagnostics.py  held-out accuracy and PanFlute's reward-smoothing probe (Figure 4)
"""

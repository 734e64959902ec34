"""The run-wide runtime: what every process of a run stands on, whatever its role.

lifecycle.py stop signals, parent-death, allocator tuning
logs.py      structlog JSON events, one per line, with role and pid
doorbell.py  ZeroMQ wake-ups between processes (no polling with sleep)
timing.py    per-phase timers
roles.py     the one runner every role's process goes through
wiring.py    the names of a run's segments, endpoints and slots

It lives under replay/ because replay is the lowest package every process imports
(envs <- replay <- learner <- modelserver, actors <- launch).
"""

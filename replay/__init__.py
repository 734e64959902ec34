"""Replay, and the run-wide runtime every process stands on.

store.py     ReplayStore: per-member rings of bit-packed transitions in shared memory, sampled in place
service.py   the ingest service: validates actors' messages (protocol.py), stores, acknowledges, deduplicates
client.py    an actor's acknowledged, resending connection to the service
limiter.py   the updates-per-step rate limiter
counters.py, slots.py, shm.py   shared-memory counters, slot queues and self-describing segments
security.py  endpoints and CurveZMQ keys
runtime/     what every process of a run shares: lifecycle, logs, doorbells, timing, roles, wiring
"""

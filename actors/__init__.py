"""Acting: the processes that step environments with the current policy.

actor.py     local actor processes: behaviour policy (softmax over Q/temperature), transitions to replay
remote.py    `mbgen actor`: the same loop on another machine, over CurveZMQ
evaluator.py greedy evaluation of every member at every evaluation point -> metrics.jsonl
acting.py    a process's local copy of Q (and an encoder) that chooses actions
"""

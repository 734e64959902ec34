"""The one way mbgen joins a Ray cluster (`--engine ray` of `mbgen study` and `mbgen run`).

Ray is an optional extra and the control plane only: nothing imports it until a command
asks for the Ray engine, and then a missing install is a one-line refusal.
"""

from __future__ import annotations

import socket

REACH_TIMEOUT_S = 5.0  # the head's port must accept a connection this soon (Ray itself waits minutes)

INSTALL_HINT = "pip install 'mbgen[ray]'"


def require_ray():
    """The `ray` module, or a one-line refusal naming the install."""
    try:
        import ray
    except ImportError:
        raise ValueError(f"--engine ray needs Ray: {INSTALL_HINT}") from None
    return ray


def check_reachable(address: str) -> None:
    """A one-line refusal unless something accepts connections at `address` (HOST:PORT, the head's GCS)."""
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=REACH_TIMEOUT_S).close()
    except (OSError, ValueError) as error:
        raise ValueError(
            f"address: no Ray cluster answers at {address} ({getattr(error, 'strerror', None) or error}); "
            "start one with `ray start --head --port PORT`"
        ) from None


def join_cluster(address: str):
    """The `ray` module, connected to the cluster whose head is at `address` (HOST:PORT)."""
    ray = require_ray()
    check_reachable(address)
    try:
        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    except ConnectionError as error:
        raise ValueError(f"address: no Ray cluster answers at {address} ({error})") from None
    return ray

"""Endpoints and CurveZMQ keys: local by default, authenticated and encrypted when remote.

A key directory made by `mbgen keys DIR` holds
  server.key, server.key_secret      the run's key pair (the service and the parameter publisher)
  actor.key, actor.key_secret        a key pair for actors on other machines
  authorized/actor.key               public keys the run accepts (add more files to admit more actors)
The run reads server.key_secret and authorized/; a remote actor reads server.key and
actor.key_secret. Copy only those files to each machine.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import zmq
import zmq.auth

SERVER, ACTOR, AUTHORIZED = "server", "actor", "authorized"


def endpoint_is_local(endpoint: str) -> bool:
    """ipc:// and inproc:// endpoints, and tcp:// on a loopback address, are local."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    if not endpoint.startswith("tcp://"):
        raise ValueError(f"endpoint must start with tcp://, ipc:// or inproc://, got {endpoint!r}")
    host = urlparse(endpoint).hostname or ""
    if host in ("localhost",):
        return True
    if host in ("*", "0.0.0.0", "::"):
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
        except OSError:
            return False


def make_keys(directory: str | os.PathLike) -> dict[str, str]:
    """Write a server and an actor key pair, authorising the actor; returns the paths."""
    d = Path(directory)
    (d / AUTHORIZED).mkdir(parents=True, exist_ok=True)
    server_public, server_secret = zmq.auth.create_certificates(str(d), SERVER)
    actor_public, actor_secret = zmq.auth.create_certificates(str(d), ACTOR)
    shutil.copy(actor_public, d / AUTHORIZED / Path(actor_public).name)
    for path in (server_secret, actor_secret):
        os.chmod(path, 0o600)
    return {
        "server_public": server_public,
        "server_secret": server_secret,
        "actor_public": actor_public,
        "actor_secret": actor_secret,
        "authorized": str(d / AUTHORIZED),
    }


@dataclass(frozen=True)
class ServerKeys:
    public: bytes
    secret: bytes
    authorized_dir: str

    @classmethod
    def load(cls, directory: str) -> "ServerKeys":
        d = Path(directory)
        secret_file = d / f"{SERVER}.key_secret"
        if not secret_file.exists():
            raise ValueError(f"keys: {secret_file} is missing; create a key directory with `mbgen keys {directory}`")
        if not (d / AUTHORIZED).is_dir():
            raise ValueError(f"keys: {d / AUTHORIZED} is missing; it must hold the public keys of allowed actors")
        public, secret = zmq.auth.load_certificate(str(secret_file))
        return cls(public, secret, str(d / AUTHORIZED))

    def apply(self, sock: zmq.Socket) -> None:
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_server = True


@dataclass(frozen=True)
class ClientKeys:
    public: bytes
    secret: bytes
    server_public: bytes

    @classmethod
    def load(cls, directory: str) -> "ClientKeys":
        d = Path(directory)
        secret_file, server_file = d / f"{ACTOR}.key_secret", d / f"{SERVER}.key"
        for f in (secret_file, server_file):
            if not f.exists():
                raise ValueError(f"keys: {f} is missing; an actor needs actor.key_secret and server.key")
        public, secret = zmq.auth.load_certificate(str(secret_file))
        server_public, _ = zmq.auth.load_certificate(str(server_file))
        return cls(public, secret, server_public)

    def apply(self, sock: zmq.Socket) -> None:
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_serverkey = self.server_public


def start_authenticator(ctx: zmq.Context, keys: ServerKeys):
    """A ZAP handler thread that admits only clients whose public key is in `authorized/`."""
    from zmq.auth.thread import ThreadAuthenticator

    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve(domain="*", location=keys.authorized_dir)
    return auth


def check_bind(endpoint: str, keys: ServerKeys | None) -> None:
    if not endpoint_is_local(endpoint) and keys is None:
        raise ValueError(
            f"refusing to bind {endpoint} without CurveZMQ keys: a non-loopback TCP endpoint "
            "needs `keys` (create them with `mbgen keys DIR`)"
        )

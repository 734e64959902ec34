"""Endpoints, credentials and keys: every path into a run is authenticated.

Local actors connect to an ipc:// endpoint in a private (0700) directory and log in with a
per-run token (ZeroMQ PLAIN, checked by the service's ZAP handler); remote actors connect over
TCP with CurveZMQ and an authorised public key. Either way the service knows a peer by its
credential, not by what its messages claim.

A key directory made by `mbgen keys DIR` holds
  server.key, server.key_secret      the run's key pair (the service and the parameter publisher)
  actor.key, actor.key_secret        a key pair for actors on other machines
  authorized/actor.key               public keys the run accepts (add more files to admit more actors)
The run reads server.key_secret and authorized/; a remote actor reads server.key and
actor.key_secret. Copy only those files to each machine.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shutil
import socket
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import zmq
import zmq.auth
from zmq.utils import z85

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


def check_bind(endpoint: str, keys: ServerKeys | None) -> None:
    if not endpoint_is_local(endpoint) and keys is None:
        raise ValueError(
            f"refusing to bind {endpoint} without CurveZMQ keys: a non-loopback TCP endpoint "
            "needs `keys` (create them with `mbgen keys DIR`)"
        )


# -- local credentials and the ZAP handler -----------------------------------------------------
LOCAL_DOMAIN, REMOTE_DOMAIN = "local", "remote"  # ZAP domains of the local and remote endpoints
CREDENTIALS_FILE = "credentials.json"  # in the run's private socket directory, mode 0600


def private_directory(prefix: str = "mbgen-") -> str:
    """A new directory only this user can enter (mode 0700): where a run's ipc endpoints live."""
    path = tempfile.mkdtemp(prefix=prefix)
    os.chmod(path, 0o700)
    return path


def check_private_endpoint(endpoint: str) -> None:
    """A local endpoint must be a filesystem ipc:// path in a 0700 directory, or loopback TCP.

    Abstract-namespace sockets (ipc://@name) have no permissions at all: any process on the
    machine could connect, so they are refused.
    """
    if endpoint.startswith("ipc://@"):
        raise ValueError(f"endpoint {endpoint}: abstract-namespace sockets have no permissions; use a private ipc path")
    if endpoint.startswith("ipc://"):
        directory = os.path.dirname(endpoint[len("ipc://") :]) or "."
        mode = os.stat(directory).st_mode & 0o777
        if mode & 0o077:
            raise ValueError(f"endpoint {endpoint}: directory {directory} is mode {mode:o}; it must be 0700")
    elif not endpoint_is_local(endpoint):
        raise ValueError(f"endpoint {endpoint} is for local actors: use ipc:// or loopback tcp://")


class LocalCredentials:
    """Per-run secrets of the local actors: {actor id: token} in a 0600 file of the private directory.

    The supervisor writes a token for every local actor it starts (and for replacements); the
    replay service's ZAP handler admits a PLAIN login only with a matching token, and binds the
    connection to that actor id, so no local peer can send as another.
    """

    def __init__(self, path: str):
        self.path = path
        self._tokens: dict[str, str] = {}
        self._mtime = -1.0

    @classmethod
    def in_directory(cls, directory: str) -> "LocalCredentials":
        return cls(os.path.join(directory, CREDENTIALS_FILE))

    def issue(self, actor: str) -> str:
        """Add a fresh token for `actor` (written atomically) and return it."""
        self.reload()
        token = secrets.token_hex(16)
        self._tokens[actor] = token
        tmp = f"{self.path}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self._tokens, f)
        os.replace(tmp, self.path)
        return token

    def reload(self) -> None:
        try:
            mtime = os.stat(self.path).st_mtime
        except FileNotFoundError:
            return
        if mtime != self._mtime:
            with open(self.path) as f:
                self._tokens = json.load(f)
            self._mtime = mtime

    def token(self, actor: str) -> str:
        self.reload()
        if actor not in self._tokens:
            raise ValueError(f"no local credentials for actor {actor!r} in {self.path}")
        return self._tokens[actor]

    def check(self, actor: str, token: str) -> bool:
        self.reload()
        expected = self._tokens.get(actor)
        return expected is not None and secrets.compare_digest(expected, token)


def apply_local_login(sock: zmq.Socket, actor: str, token: str) -> None:
    """Log a DEALER in to a local endpoint with its per-run token (ZeroMQ PLAIN)."""
    sock.plain_username = actor.encode()
    sock.plain_password = token.encode()


def key_name(public: bytes, authorized_dir: str) -> str | None:
    """The file stem of the authorised key equal to `public` (32 raw bytes, as ZAP gives it), or None."""
    public = z85.encode(public)  # certificate files hold Z85 text
    for path in sorted(Path(authorized_dir).glob("*.key")):
        try:
            key, _ = zmq.auth.load_certificate(str(path))
        except (OSError, ValueError):
            continue
        if key == public:
            return path.stem
    return None


def authorized_keys(authorized_dir: str | None) -> list[str]:
    """The file stems of the authorised public keys (the names remote peers are known by)."""
    if not authorized_dir:
        return []
    names = []
    for path in sorted(Path(authorized_dir).glob("*.key")):
        try:
            zmq.auth.load_certificate(str(path))
        except (OSError, ValueError):
            continue
        names.append(path.stem)
    return names


class ZapHandler:
    """ZeroMQ's authentication handler (ZAP, RFC 27) for one context, in a thread.

    Local endpoint (domain "local", PLAIN): admitted iff the (actor, token) pair matches the run's
    LocalCredentials; user id "local/<actor>". Remote endpoint (domain "remote", CURVE): admitted
    iff the client's public key is in the authorized directory; user id "key/<key file stem>".
    Anything else is refused. The service reads the user id of every message (frame property
    "User-Id"), so a peer's identity is its credential, never a header string.
    """

    def __init__(self, ctx: zmq.Context, local: LocalCredentials | None, authorized_dir: str | None):
        self.local, self.authorized_dir = local, authorized_dir
        self.refused = 0  # handshakes refused (bad or missing credentials)
        self.socket = ctx.socket(zmq.REP)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind("inproc://zeromq.zap.01")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="zap", daemon=True)
        self._thread.start()

    def decide(self, domain: str, mechanism: bytes, credentials: list[bytes]) -> tuple[bool, str]:
        """(admitted, user id or reason): a plain function of the request, tested on its own."""
        if domain == LOCAL_DOMAIN and mechanism == b"PLAIN" and len(credentials) == 2 and self.local is not None:
            actor = credentials[0].decode("utf-8", "replace")
            if self.local.check(actor, credentials[1].decode("utf-8", "replace")):
                return True, f"local/{actor}"
            return False, "unknown local actor or wrong token"
        if domain == REMOTE_DOMAIN and mechanism == b"CURVE" and len(credentials) == 1 and self.authorized_dir:
            name = key_name(credentials[0], self.authorized_dir)
            if name is not None:
                return True, f"key/{name}"
            return False, "public key not authorised"
        return False, f"mechanism {mechanism.decode('ascii', 'replace')} not accepted on domain {domain!r}"

    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        while not self._stop.is_set():
            if not poller.poll(200):
                continue
            try:
                request = self.socket.recv_multipart()
            except zmq.ZMQError:
                return
            request_id = request[1] if len(request) > 1 else b""
            if len(request) < 6 or request[0] != b"1.0":
                ok, text = False, "malformed ZAP request"
            else:
                ok, text = self.decide(request[2].decode("utf-8", "replace"), request[5], request[6:])
            if not ok:
                self.refused += 1
            reply = [b"1.0", request_id, b"200" if ok else b"400", b"OK" if ok else text.encode()]
            reply += [text.encode() if ok else b"", b""]
            try:
                self.socket.send_multipart(reply)
            except zmq.ZMQError:
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self.socket.close(linger=0)

"""A small ZMTP 3.0 server with the CURVE mechanism: the replay service's remote endpoint.

Why not libzmq. libzmq limits each *frame* (ZMQ_MAXMSGSIZE) and counts whole *messages* against
its high-water mark, and it makes a multipart message visible only once complete, so one
authenticated peer sending a message of 30,000 maximal frames made the service buffer a gigabyte.
No socket option bounds that. This server reads each frame's header before its body and
disconnects a peer whose frame, frame count or message size is over the limits before reading
(let alone keeping) the excess; it keeps at most one complete message per connection waiting and
stops reading that connection until the service has taken it (TCP then pushes back on the
sender). So a connection's buffers are bounded by construction: at most
`Limits.per_connection_bytes()` (a frame being read, one message waiting, one the service is
handling, unsent replies); connections per key and handshakes in progress are limited too.

It runs in a thread of its own (reading and decrypting overlap the service's work, as libzmq's
I/O thread did); the service polls `fileno()` and takes messages with `recv()`.

Wire format (RFC 23 ZMTP 3.0, RFC 26 CurveZMQ), as unmodified libzmq DEALER sockets with
curve keys speak it:
  greeting   64 bytes: 0xFF, 8 bytes, 0x7F, version 3.0, mechanism "CURVE", as-server, filler
  frames     flags (bit 0 more, bit 1 long, bit 2 command), size (1 or 8 bytes), body
  HELLO      client C' and Box[64 zeros](C'->S)                      -> WELCOME
  WELCOME    Box[S' + cookie](S->C')
  INITIATE   cookie, Box[C + vouch + metadata](C'->S'); vouch = Box[C' + S](C->S')  -> READY
  READY      Box[metadata](S'->C')  (Socket-Type ROUTER)
  MESSAGE    per frame: "\\x07MESSAGE", 8-byte nonce, Box[flags + data](C'<->S'); the more-flag
             is inside the box
Client nonces must increase strictly (a replayed or reordered box is a disconnect). The cookie
is random and kept per connection (this server is stateful, the client only echoes it).

Routes. A message is answered on the connection it came on; the client's routing id (its
"Identity" property) is ignored, so no peer can take over another's route. A connection is
bound to the authorised key it proved (`Connection.peer`, "key/<file stem>").

The crypto is libsodium's crypto_box (X25519, XSalsa20-Poly1305) through ctypes, the library
pyzmq ships (or the system's).
"""

from __future__ import annotations

import contextvars
import ctypes
import ctypes.util
import glob
import hmac
import os
import selectors
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlparse

# -- libsodium ------------------------------------------------------------------------------
PUBLIC, SECRET, NONCE, MAC = 32, 32, 24, 16


def _load_sodium() -> ctypes.CDLL:
    import zmq

    site = os.path.dirname(os.path.dirname(zmq.__file__))
    candidates = sorted(glob.glob(os.path.join(site, "pyzmq.libs", "libsodium*.so*")))
    candidates += [ctypes.util.find_library("sodium") or "", "libsodium.so.23", "libsodium.so"]
    for path in candidates:
        if not path:
            continue
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        if lib.sodium_init() >= 0:
            return lib
    raise OSError("libsodium not found (pyzmq ships one; or install libsodium23)")


class Sodium:
    """The few libsodium calls CurveZMQ needs. Boxes are crypto_box_easy's layout: MAC then ciphertext
    (crypto_box's output without its 16 zero bytes, which is what goes on the wire)."""

    def __init__(self):
        lib = self.lib = _load_sodium()
        p, n = ctypes.c_void_p, ctypes.c_ulonglong
        for name, args in {
            "crypto_box_keypair": [p, p],
            "crypto_box_beforenm": [p, p, p],
            "crypto_box_easy_afternm": [p, p, n, p, p],
            "crypto_box_open_easy_afternm": [p, p, n, p, p],
            "crypto_box_easy": [p, p, n, p, p, p],
            "crypto_box_open_easy": [p, p, n, p, p, p],
        }.items():
            getattr(lib, name).argtypes = args
            getattr(lib, name).restype = ctypes.c_int
        lib.randombytes_buf.argtypes = [p, ctypes.c_size_t]
        lib.randombytes_buf.restype = None

    def random(self, n: int) -> bytes:
        out = ctypes.create_string_buffer(n)
        self.lib.randombytes_buf(out, n)
        return out.raw

    def keypair(self) -> tuple[bytes, bytes]:
        pk, sk = ctypes.create_string_buffer(PUBLIC), ctypes.create_string_buffer(SECRET)
        self.lib.crypto_box_keypair(pk, sk)
        return pk.raw, sk.raw

    def precompute(self, public: bytes, secret: bytes) -> bytes:
        k = ctypes.create_string_buffer(32)
        if self.lib.crypto_box_beforenm(k, public, secret) != 0:
            raise ValueError("bad public key")
        return k.raw

    def box(self, message: bytes, nonce: bytes, key: bytes) -> bytes:
        out = ctypes.create_string_buffer(len(message) + MAC)
        self.lib.crypto_box_easy_afternm(out, message, len(message), nonce, key)
        return out.raw

    def open(self, box: bytes, nonce: bytes, key: bytes) -> bytearray | None:
        """The plaintext, or None when the box does not verify."""
        if len(box) < MAC:
            return None
        out = bytearray(len(box) - MAC)
        target = (ctypes.c_char * len(out)).from_buffer(out) if out else None
        ok = self.lib.crypto_box_open_easy_afternm(target, box, len(box), nonce, key) == 0
        del target  # release the export so `out` may be used freely
        return out if ok else None

    def open_at(self, buf: bytearray, offset: int, size: int, nonce: bytes, key: bytes) -> bytearray | None:
        """`open` of the box buf[offset:offset+size], read in place (no copy of the ciphertext)."""
        if size < MAC:
            return None
        out = bytearray(size - MAC)
        target = (ctypes.c_char * len(out)).from_buffer(out) if out else None
        source = (ctypes.c_char * size).from_buffer(buf, offset)
        ok = self.lib.crypto_box_open_easy_afternm(target, source, size, nonce, key) == 0
        del target, source  # release the exports so both buffers may be resized again
        return out if ok else None

    def box_keys(self, message: bytes, nonce: bytes, public: bytes, secret: bytes) -> bytes:
        out = ctypes.create_string_buffer(len(message) + MAC)
        self.lib.crypto_box_easy(out, message, len(message), nonce, public, secret)
        return out.raw

    def open_keys(self, box: bytes, nonce: bytes, public: bytes, secret: bytes) -> bytes | None:
        if len(box) < MAC:
            return None
        out = ctypes.create_string_buffer(max(1, len(box) - MAC))
        if self.lib.crypto_box_open_easy(out, box, len(box), nonce, public, secret) != 0:
            return None
        return out.raw[: len(box) - MAC]


_SODIUM: Sodium | None = None


def sodium() -> Sodium:
    global _SODIUM
    if _SODIUM is None:
        _SODIUM = Sodium()
    return _SODIUM


# -- ZMTP ---------------------------------------------------------------------------------------
MORE, LONG, COMMAND = 1, 2, 4
GREETING = 64
MAX_COMMAND = 2048  # the largest handshake command accepted (INITIATE with its metadata)
MESSAGE_OVERHEAD = 8 + 8 + MAC + 1  # "\x07MESSAGE", nonce, MAC, flags


def greeting(mechanism: bytes = b"CURVE", as_server: bool = True) -> bytes:
    return b"\xff" + bytes(8) + b"\x7f" + bytes([3, 0]) + mechanism.ljust(20, b"\0") + bytes([as_server]) + bytes(31)


def frame(body: bytes, flags: int = 0) -> bytes:
    if len(body) > 255:
        return bytes([flags | LONG]) + struct.pack(">Q", len(body)) + body
    return bytes([flags, len(body)]) + body


def command(name: bytes, data: bytes) -> bytes:
    return frame(bytes([len(name)]) + name + data, COMMAND)


def metadata(props: dict[str, bytes]) -> bytes:
    return b"".join(bytes([len(k)]) + k.encode() + struct.pack(">I", len(v)) + v for k, v in props.items())


def parse_metadata(data: bytes) -> dict[str, bytes]:
    props, i = {}, 0
    while i < len(data):
        n = data[i]
        name = data[i + 1 : i + 1 + n].decode("ascii", "replace")
        i += 1 + n
        if i + 4 > len(data):
            raise ValueError("truncated metadata")
        (size,) = struct.unpack(">I", data[i : i + 4])
        i += 4
        if i + size > len(data):
            raise ValueError("truncated metadata")
        props[name.lower()] = bytes(data[i : i + size])
        i += size
    return props


@dataclass(frozen=True)
class Limits:
    max_frame: int  # the largest data frame (plaintext bytes)
    max_frames: int  # frames per message
    max_message: int  # plaintext bytes per message, all frames together
    read_chunk: int = 65536  # bytes read from the kernel at a time
    max_output: int = 65536  # reply bytes queued for a peer before its connection is not read
    max_handshakes: int = 256  # connections not yet authenticated
    max_handshakes_per_address: int = 16  # of which from one address
    max_per_key: int = 16  # connections one key may hold
    handshake_timeout_s: float = 10.0
    idle_timeout_s: float = 300.0  # an authenticated connection that sends nothing this long is closed

    def per_connection_bytes(self) -> int:
        """The most one connection can make this server hold: a partly read frame plus one chunk, one
        message being assembled or waiting to be taken and one the owner is handling, and its queued
        replies (plus one reply)."""
        return (self.max_frame + MESSAGE_OVERHEAD + 8 + self.read_chunk) + 2 * self.max_message + self.max_output + 4096

    def bound_bytes(self, keys: int) -> int:
        """The most all connections together can make this server hold, with `keys` authorised keys."""
        return keys * self.max_per_key * self.per_connection_bytes() + self.max_handshakes * HANDSHAKE_BYTES


HANDSHAKE_READ = 4096  # bytes read at a time before a peer is authenticated
HANDSHAKE_BYTES = GREETING + MAX_COMMAND + 9 + HANDSHAKE_READ + 1024  # what a handshake can make us hold


class Closed(Exception):
    """A connection must be dropped; the text says why."""


GREET, HELLO, INITIATE, READY = range(4)


class Connection:
    def __init__(self, server: "CurveServer", sock: socket.socket, address):
        self.server, self.sock, self.address = server, sock, address
        self.fd = sock.fileno()
        self.state = GREET
        self.buf = bytearray()
        self.pos = 0
        self.out = bytearray()
        self.peer: str | None = None  # "key/<name>" once authenticated
        self.client_public: bytes | None = None
        self.frames: list = []  # the message being assembled (plaintext frames)
        self.message_bytes = 0
        self.ready: list | None = None  # a complete message waiting for the service
        self.peer_nonce = 0
        self.nonce = 0
        self.key: bytes | None = None  # precomputed C'<->S' key
        self.started = self.last_rx = time.monotonic()
        self.closed = False
        self.reason = ""
        self.events = 0

    def __repr__(self) -> str:
        return f"<Connection {self.peer or self.address}>"

    # -- reading -----------------------------------------------------------------
    def wants_read(self) -> bool:
        return not self.closed and self.ready is None and len(self.out) <= self.server.limits.max_output

    def read(self) -> None:
        """Read one chunk from the kernel (never more than one chunk beyond the frame being read) and parse."""
        limits = self.server.limits
        try:
            data = self.sock.recv(limits.read_chunk if self.state == READY else HANDSHAKE_READ)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            raise Closed(f"receive failed: {error}") from None
        if not data:
            raise Closed("peer closed the connection")
        self.last_rx = time.monotonic()
        self.buf += data
        self.parse()

    def _take(self, n: int) -> bytes | None:
        if len(self.buf) - self.pos < n:
            return None
        out = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return out

    def parse(self) -> None:
        """Handle every complete frame in the buffer, until a message is complete (then stop: it waits
        for the service) or the buffer runs out."""
        while self.ready is None and not self.closed:
            if self.state == GREET:
                got = self._take(GREETING)
                if got is None:
                    break
                self.on_greeting(got)
                continue
            available = len(self.buf) - self.pos
            if available < 2:
                break
            flags = self.buf[self.pos]
            if flags & ~(MORE | LONG | COMMAND):
                raise Closed(f"bad frame flags {flags:#x}")
            if flags & LONG:
                if available < 9:
                    break
                (size,) = struct.unpack_from(">Q", self.buf, self.pos + 1)
                head = 9
            else:
                size, head = self.buf[self.pos + 1], 2
            # The limits, before a byte of the body is kept.
            limit = MAX_COMMAND if self.state != READY else self.server.limits.max_frame + MESSAGE_OVERHEAD
            if size > limit:
                raise Closed(f"frame of {size} bytes over the limit of {limit}")
            if available < head + size:
                break
            start = self.pos + head
            self.pos = start + size
            if self.state == READY:
                self.on_message_frame(start, size)
                continue
            body = bytes(self.buf[start : start + size])
            if not flags & COMMAND:
                raise Closed("a data frame during the handshake")
            else:
                self.on_command(body)
        if self.pos and (self.pos > 65536 or self.pos == len(self.buf)):
            del self.buf[: self.pos]
            self.pos = 0

    # -- the handshake ---------------------------------------------------------------
    def on_greeting(self, g: bytes) -> None:
        if g[0] != 0xFF or g[9] != 0x7F:
            raise Closed("not a ZMTP peer")
        if g[10] < 3:
            raise Closed(f"ZMTP {g[10]}.x peer; this endpoint speaks ZMTP 3 with CURVE")
        if g[12:32].rstrip(b"\0") != b"CURVE":
            raise Closed(f"mechanism {g[12:32].rstrip(bytes(1))!r}; this endpoint needs CURVE keys")
        if g[32]:
            raise Closed("peer says it is a server")
        self.state = HELLO

    def on_command(self, body: bytes) -> None:
        n = body[0] if body else 0
        name, data = body[1 : 1 + n], body[1 + n :]
        s, srv = sodium(), self.server
        if self.state == HELLO and name == b"HELLO":
            if len(data) != 194 or data[:2] != b"\x01\x00":
                raise Closed("malformed HELLO")
            self.client_public, short = data[74:106], data[106:114]
            self.peer_nonce = struct.unpack(">Q", short)[0]
            key = s.precompute(self.client_public, srv.secret)
            if s.open(data[114:194], b"CurveZMQHELLO---" + short, key) != bytes(64):
                raise Closed("HELLO box does not verify")
            self.short_public, self.short_secret = s.keypair()
            self.cookie = s.random(96)
            nonce = s.random(16)
            welcome = s.box(self.short_public + self.cookie, b"WELCOME-" + nonce, key)
            self.send_raw(command(b"WELCOME", nonce + welcome))
            self.key = s.precompute(self.client_public, self.short_secret)
            self.state = INITIATE
        elif self.state == INITIATE and name == b"INITIATE":
            if len(data) < 96 + 8 + MAC + 128 or not hmac.compare_digest(data[:96], self.cookie):
                raise Closed("malformed INITIATE or wrong cookie")
            short = data[96:104]
            nonce = struct.unpack(">Q", short)[0]
            if nonce <= self.peer_nonce:
                raise Closed("INITIATE nonce did not increase")
            self.peer_nonce = nonce
            plain = s.open(data[104:], b"CurveZMQINITIATE" + short, self.key)
            if plain is None:
                raise Closed("INITIATE box does not verify")
            long_public, vouch_nonce, vouch = bytes(plain[:32]), bytes(plain[32:48]), bytes(plain[48:128])
            vouched = s.open_keys(vouch, b"VOUCH---" + vouch_nonce, long_public, self.short_secret)
            if (
                vouched is None
                or not hmac.compare_digest(vouched[:32], self.client_public)
                or not hmac.compare_digest(vouched[32:64], srv.public)
            ):
                raise Closed("vouch does not verify")
            try:
                props = parse_metadata(bytes(plain[128:]))
            except ValueError as error:
                raise Closed(str(error)) from None
            if props.get("socket-type") != b"DEALER":
                raise Closed(f"socket type {props.get('socket-type')!r}; this endpoint serves DEALER sockets")
            peer = srv.authorize(long_public)
            if peer is None:
                srv.refused += 1
                raise Closed("public key not authorised")
            if srv.connections_of(peer) >= srv.limits.max_per_key:
                srv.refused += 1
                raise Closed(f"{peer} already holds {srv.limits.max_per_key} connections")
            self.peer = peer
            self.nonce += 1
            short = struct.pack(">Q", self.nonce)
            ready = s.box(metadata({"Socket-Type": b"ROUTER"}), b"CurveZMQREADY---" + short, self.key)
            self.send_raw(command(b"READY", short + ready))
            self.state = READY
            del self.short_secret, self.cookie
            srv.on_authenticated(self)
        else:
            raise Closed(f"unexpected command {name!r} in handshake state {self.state}")

    # -- messages ------------------------------------------------------------------
    def on_message_frame(self, start: int, size: int) -> None:
        """The MESSAGE frame buf[start:start+size], decrypted in place."""
        if size < MESSAGE_OVERHEAD or self.buf[start : start + 8] != b"\x07MESSAGE":
            raise Closed("malformed MESSAGE")
        short = bytes(self.buf[start + 8 : start + 16])
        nonce = struct.unpack(">Q", short)[0]
        if nonce <= self.peer_nonce:
            raise Closed("MESSAGE nonce did not increase (a replayed or reordered box)")
        plain = sodium().open_at(self.buf, start + 16, size - 16, b"CurveZMQMESSAGEC" + short, self.key)
        if plain is None:
            raise Closed("MESSAGE box does not verify")
        self.peer_nonce = nonce
        inner = plain[0]
        if inner & ~(MORE | COMMAND):
            raise Closed(f"bad message flags {inner:#x}")
        limits = self.server.limits
        if len(self.frames) >= limits.max_frames:
            raise Closed(f"message of more than {limits.max_frames} frames")
        self.message_bytes += len(plain) - 1
        if self.message_bytes > limits.max_message:
            raise Closed(f"message of more than {limits.max_message} bytes")
        if inner & COMMAND:  # a ZMTP 3.1 command (PING...): not spoken here; counted against the limits, dropped
            if not inner & MORE:
                self.frames, self.message_bytes = [], 0
            return
        self.frames.append(memoryview(plain)[1:])
        if not inner & MORE:
            self.ready, self.frames, self.message_bytes = self.frames, [], 0
            self.server.ready_conns.append(self)
            self.server.ring()

    # -- writing ---------------------------------------------------------------------
    def send(self, frames: list[bytes]) -> None:
        """Send a message (the owner's thread; replies are encrypted there, written by either thread)."""
        if self.closed or self.state != READY:
            return
        s, out = sodium(), []
        for i, data in enumerate(frames):
            self.nonce += 1
            short = struct.pack(">Q", self.nonce)
            more = b"\x01" if i < len(frames) - 1 else b"\x00"
            box = s.box(more + bytes(data), b"CurveZMQMESSAGES" + short, self.key)
            out.append(frame(b"\x07MESSAGE" + short + box))
        with self.server.lock:
            if self.closed:
                return
            self.out += b"".join(out)
            self._write()
        if self.out:
            self.server.later(self)  # the server's thread waits for the socket to take the rest

    def send_raw(self, data: bytes) -> None:
        """A handshake command (the server's thread)."""
        with self.server.lock:
            self.out += data
        self.flush()

    def _write(self) -> None:
        """Write what the socket takes now (under the server's lock)."""
        while self.out and not self.closed:
            try:
                n = self.sock.send(self.out)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # the reading side sees the connection fail and closes it
                self.out = bytearray()
                return
            del self.out[:n]

    def flush(self) -> None:
        with self.server.lock:
            self._write()
        self.server.update_interest(self)


class CurveServer:
    """A ZMTP 3.0 CURVE server for DEALER clients on one TCP endpoint, driven by its owner's loop.

    With `threaded`, a thread of its own accepts, reads, decrypts and writes, and `fileno()` is a pipe
    that is readable when a complete message waits; without, `fileno()` is the selector's (epoll)
    descriptor and the owner's calls do the work. Either way the owner polls `fileno()` beside its
    other sockets and calls `recv()` for the next complete message, one connection after another in
    turn: (connection, frames), or None. Replies go through `connection.send`. `closed()` hands over
    the connections dropped since the last call (the owner frees what they held).

    Threads: the selector, the connections' input side and closing belong to the server's thread;
    the owner takes a message (`recv`, which hands the connection back through `resume`) and
    encrypts replies; output buffers, socket writes, closing and `_closed` are under `lock`.
    """

    def __init__(
        self,
        endpoint: str,
        public: bytes,
        secret: bytes,
        authorize: Callable[[bytes], str | None],
        limits: Limits,
        log=None,
        threaded: bool = True,
    ):
        url = urlparse(endpoint)
        if url.scheme != "tcp" or url.port is None:
            raise ValueError(f"remote endpoint must be tcp://HOST:PORT, got {endpoint!r}")
        host = url.hostname or "0.0.0.0"
        host = "0.0.0.0" if host == "*" else host
        self.public, self.secret, self.authorize, self.limits, self.log = public, secret, authorize, limits, log
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, url.port))
        self.listener.listen(128)
        self.listener.setblocking(False)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ, None)
        self.conns: dict[int, Connection] = {}
        self.ready_conns: deque[Connection] = deque()
        self._closed: list[Connection] = []
        self.refused = 0  # handshakes refused (wrong mechanism, bad boxes, unknown keys, over a limit)
        self.dropped = 0  # authenticated connections dropped for breaking a limit or the protocol
        self.next_sweep = 0.0
        self.lock = threading.Lock()
        self.resume: deque[Connection] = deque()  # connections the owner took a message from, or wrote to
        self.touch_requested = False
        self.wake_r, self.wake_w = os.pipe()  # rung by the owner: the server's thread has work
        self.bell_r, self.bell_w = os.pipe()  # rung by the server's thread: a message waits
        for fd in (self.wake_r, self.wake_w, self.bell_r, self.bell_w):
            os.set_blocking(fd, False)
        self.selector.register(self.wake_r, selectors.EVENT_READ, "wake")
        self._stop = threading.Event()
        self.thread = None
        if threaded:
            run = contextvars.copy_context().run  # the owner's log context (role, pid)
            self.thread = threading.Thread(target=run, args=(self._serve,), name="zmtp", daemon=True)
            self.thread.start()

    def fileno(self) -> int:
        return self.bell_r if self.thread is not None else self.selector.fileno()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                self.pump(0.5)
            except Exception:  # a bug of ours: log it, drop nothing else
                if self.log is not None:
                    self.log.exception("zmtp_failed")
                time.sleep(0.1)

    @staticmethod
    def _ring(fd: int) -> None:
        try:
            os.write(fd, b"x")
        except (BlockingIOError, OSError):
            pass  # full: it is rung already

    @staticmethod
    def _drain(fd: int) -> None:
        try:
            while os.read(fd, 4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def ring(self) -> None:
        if self.thread is not None:
            self._ring(self.bell_w)

    def later(self, conn: Connection) -> None:
        """Hand `conn` back to the server's thread (to read on, or to wait for its socket to be writable)."""
        if self.thread is not None:
            self.resume.append(conn)
            self._ring(self.wake_w)
        else:
            self._resume(conn)

    def _resume(self, conn: Connection) -> None:
        if conn.closed:
            return
        try:
            conn.parse()  # the next message may already be here
        except Closed as error:
            self.close(conn, str(error))
        self.update_interest(conn)

    def connections_of(self, peer: str) -> int:
        return sum(1 for c in self.conns.values() if c.peer == peer and not c.closed)

    def on_authenticated(self, conn: Connection) -> None:
        if self.log is not None:
            self.log.info("remote_connected", peer=conn.peer, address=f"{conn.address[0]}:{conn.address[1]}")

    # -- the loop's side ---------------------------------------------------------------
    def pump(self, timeout: float = 0) -> None:
        """Accept, read and write what is ready now (or within `timeout` seconds)."""
        for key, events in self.selector.select(timeout):
            if key.data is None:
                self._accept()
                continue
            if key.data == "wake":
                self._drain(self.wake_r)
                continue
            conn = key.data
            try:
                if events & selectors.EVENT_WRITE:
                    conn.flush()
                if events & selectors.EVENT_READ and conn.wants_read():
                    conn.read()
            except Closed as error:
                self.close(conn, str(error))
            self.update_interest(conn)
        while self.resume:
            self._resume(self.resume.popleft())
        if self.touch_requested:
            self.touch_requested = False
            now = time.monotonic()
            for conn in self.conns.values():
                conn.last_rx = max(conn.last_rx, now)
        now = time.monotonic()
        if now >= self.next_sweep:
            self.sweep(now)
            self.next_sweep = now + 1.0

    def recv(self):
        """The next complete message, (connection, frames), or None. The connection is read on (for its
        next message) only once its message is taken: one message per connection at a time."""
        if self.thread is not None:
            self._drain(self.bell_r)  # before looking: a message queued after this rings again
        elif not self.ready_conns:
            self.pump(0)
        while self.ready_conns:
            conn = self.ready_conns.popleft()
            frames, conn.ready = conn.ready, None
            if conn.closed or frames is None:
                continue
            self.later(conn)
            return conn, frames
        return None

    def closed(self) -> list[Connection]:
        with self.lock:
            out, self._closed = self._closed, []
        return out

    def touch(self) -> None:
        """Restart every idle clock (the owner stopped reading for a while, e.g. paused by its limiter)."""
        self.touch_requested = True
        if self.thread is None:
            self.pump(0)

    def sweep(self, now: float) -> None:
        for conn in list(self.conns.values()):
            if conn.state != READY and now - conn.started > self.limits.handshake_timeout_s:
                self.refused += 1
                self.close(conn, "handshake timeout")
            elif conn.state == READY and conn.ready is None and now - conn.last_rx > self.limits.idle_timeout_s:
                self.close(conn, f"idle for {self.limits.idle_timeout_s:.0f} s")

    # -- connections ---------------------------------------------------------------------
    def _accept(self) -> None:
        for _ in range(64):
            try:
                sock, address = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # out of descriptors: leave the rest queued in the kernel for a moment
                time.sleep(0.05)
                return
            handshaking = [c for c in self.conns.values() if c.state != READY]
            same = sum(1 for c in handshaking if c.address[0] == address[0])
            if len(handshaking) >= self.limits.max_handshakes or same >= self.limits.max_handshakes_per_address:
                self.refused += 1
                sock.close()
                continue
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Connection(self, sock, address)
            self.conns[conn.fd] = conn
            self.selector.register(sock, selectors.EVENT_READ, conn)
            conn.events = selectors.EVENT_READ
            conn.send_raw(greeting())

    def update_interest(self, conn: Connection) -> None:
        if conn.closed:
            return
        events = (selectors.EVENT_READ if conn.wants_read() else 0) | (selectors.EVENT_WRITE if conn.out else 0)
        if events == conn.events:
            return
        if conn.events and events:
            self.selector.modify(conn.sock, events, conn)
        elif events:
            self.selector.register(conn.sock, events, conn)
        else:
            self.selector.unregister(conn.sock)
        conn.events = events

    def close(self, conn: Connection, reason: str) -> None:
        if conn.closed:
            return
        ordinary = reason in ("peer closed the connection", "closing") or reason.startswith("idle")
        if conn.state == READY and not ordinary:
            self.dropped += 1
        if conn.events:
            self.selector.unregister(conn.sock)
            conn.events = 0
        with self.lock:
            conn.closed, conn.reason = True, reason
            conn.sock.close()
            conn.out = bytearray()
            if conn.peer is not None:
                self._closed.append(conn)
        conn.buf = bytearray()
        conn.frames, conn.ready = [], None
        self.conns.pop(conn.fd, None)
        if conn.peer is not None:
            if self.log is not None:
                self.log.info("remote_disconnected", peer=conn.peer, reason=reason)

    def shutdown(self, last: list[bytes] | None = None, linger_s: float = 0.5) -> None:
        """Send `last` to every authenticated connection (best effort within `linger_s`), then close all."""
        if self.thread is not None:
            self._stop.set()
            self._ring(self.wake_w)
            self.thread.join(5.0)
            self.thread = None
        if last is not None:
            for conn in list(self.conns.values()):
                if conn.state == READY:
                    conn.send(last)
            deadline = time.monotonic() + linger_s
            while any(c.out for c in self.conns.values()) and time.monotonic() < deadline:
                self.pump(0.05)
        for conn in list(self.conns.values()):
            self.close(conn, "closing")
        self.selector.close()
        self.listener.close()
        for fd in (self.wake_r, self.wake_w, self.bell_r, self.bell_w):
            os.close(fd)

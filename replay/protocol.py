"""The replay wire protocol: msgpack headers and raw array frames, never pickle.

Client -> service (a DEALER to the service's ROUTER), first frame a msgpack map:

  hello   {"v", "type": "hello", "actor"}  (remote only)  -> welcome {"run": {...}, "slot": int}
  insert  {"v", "type": "insert", "actor", "seq", "member", "count",
           "arrays": [[name, dtype, shape], ...]}           followed by one raw frame per array,
                                                             in INSERT_ARRAYS order -> ack / error
  report  {"v", "type": "report", "actor", "sent": [per member]}  -> reported  (a claim, checked)

Service -> client, one msgpack frame:
  {"v", "type": "ack", "seq", "status": "stored" | "duplicate"}
  {"v", "type": "error", "seq": int | None, "error": "what was wrong"}
  {"v", "type": "welcome", "run": {...}, "slot": int}
  {"v", "type": "reported"}

`actor` must be the sender's authenticated identity (replay/service.py). Every
field of an incoming message is checked before anything touches shared memory;
`ProtocolError` carries the reason sent back to the client.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import msgpack
import numpy as np
from mbgen.envs.base import TRANSITION_FIELDS

PROTOCOL_VERSION = 2
MAX_TRANSITIONS_PER_MESSAGE = 4096  # per message; actors send message_size x envs (16 by default)
MAX_ACTOR_ID = 128
MAX_HEADER_BYTES = 4096  # the room a header frame is given in the size limits
MAX_HEADER_STR = 1024  # longest string a header may hold (decoding refuses longer ones before allocating)
INT64_MAX = (1 << 63) - 1
MESSAGE_TYPES = ("hello", "insert", "report")
# Per transition field (envs/base.py TRANSITION_FIELDS, in that order): dtype and shape ("D": obs width).
ARRAY_FORMATS = {
    "obs": ("|b1", ("D",)),
    "action": ("<i8", ()),
    "reward": ("<f4", ()),
    "next_obs": ("|b1", ("D",)),
    "terminal": ("|b1", ()),
}
INSERT_ARRAYS = tuple((name, *ARRAY_FORMATS[name]) for name in TRANSITION_FIELDS)


class ProtocolError(ValueError):
    """A message refused; `member` is filled in when readable, `count` only when the arrays were
    well formed (so a refused message's declared size never inflates the rejected count)."""

    def __init__(self, reason: str, seq: int | None = None, member: int | None = None, count: int = 0):
        super().__init__(reason)
        self.reason = reason
        self.seq = seq
        self.member = member
        self.count = count


@dataclass(frozen=True)
class StoreSpec:
    members: int
    obs_dim: int
    num_actions: int
    reward_range: tuple[float, float] = (float("-inf"), float("inf"))  # the environment's [low, high]


def max_frame_bytes(obs_dim: int) -> int:
    """The largest frame a valid message has (its observations, or its int64 actions), plus room for a header."""
    return MAX_TRANSITIONS_PER_MESSAGE * max(obs_dim, 8) + MAX_HEADER_BYTES


def max_message_bytes(obs_dim: int) -> int:
    """The most bytes a valid message's frames hold together: a header and MAX_TRANSITIONS_PER_MESSAGE
    transitions (two observations, an int64 action, a float32 reward, a terminal flag each)."""
    return MAX_HEADER_BYTES + MAX_TRANSITIONS_PER_MESSAGE * (2 * obs_dim + 8 + 4 + 1)


@dataclass
class Insert:
    actor: str
    seq: int
    member: int
    count: int
    obs: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    next_obs: np.ndarray
    terminal: np.ndarray


def pack(message: dict) -> bytes:
    return msgpack.packb({"v": PROTOCOL_VERSION, **message})


def _buffer(frame: Any) -> memoryview:
    return frame.buffer if hasattr(frame, "buffer") else memoryview(frame)


def decode_header(frame: Any) -> dict:
    try:
        header = msgpack.unpackb(
            _buffer(frame),
            raw=False,
            strict_map_key=True,
            max_array_len=64,
            max_map_len=64,
            max_str_len=MAX_HEADER_STR,
            max_bin_len=0,
            max_ext_len=0,
        )
    except ValueError as error:
        if "exceeds max_" in str(error):  # well-formed msgpack over a limit: say which, not "garbage"
            raise ProtocolError(
                f"header too large ({error}): strings of at most {MAX_HEADER_STR} characters, "
                f"the actor's name at most {MAX_ACTOR_ID}"
            ) from None
        raise ProtocolError("garbage: the first frame is not a msgpack map") from None
    except Exception:
        raise ProtocolError("garbage: the first frame is not a msgpack map") from None
    if not isinstance(header, dict):
        raise ProtocolError("garbage: the first frame is not a msgpack map")
    version = header.get("v")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"wrong protocol version {version!r}; this service speaks version {PROTOCOL_VERSION}")
    kind = header.get("type")
    if kind not in MESSAGE_TYPES:
        raise ProtocolError(f"unknown message type {kind!r}; expected one of {', '.join(MESSAGE_TYPES)}")
    actor = header.get("actor")
    if not isinstance(actor, str) or not 0 < len(actor) <= MAX_ACTOR_ID:
        raise ProtocolError(f"actor must be a string of 1 to {MAX_ACTOR_ID} characters, got {actor!r}")
    return header


def _int_field(header: dict, name: str, low: int, high: int | None, **ctx) -> int:
    value = header.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        allowed = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ProtocolError(f"{name} must be an integer {allowed}, got {value!r}", **ctx)
    return value


def decode_insert(header: dict, frames: Sequence[Any], spec: StoreSpec) -> Insert:
    """Validate an insert header and its array frames; raise ProtocolError naming the problem."""
    seq = _int_field(header, "seq", 0, None)
    member = header.get("member")
    if isinstance(member, bool) or not isinstance(member, int) or not 0 <= member < spec.members:
        raise ProtocolError(f"unknown member {member!r}; this run's members are 0..{spec.members - 1}", seq=seq)
    count = _int_field(header, "count", 1, MAX_TRANSITIONS_PER_MESSAGE, seq=seq, member=member)
    ctx = {"seq": seq, "member": member}
    declared = header.get("arrays")
    if not isinstance(declared, list) or len(declared) != len(INSERT_ARRAYS):
        raise ProtocolError(
            f"arrays must list {len(INSERT_ARRAYS)} [name, dtype, shape] entries: "
            f"{', '.join(a[0] for a in INSERT_ARRAYS)}",
            **ctx,
        )
    if len(frames) < len(INSERT_ARRAYS):
        raise ProtocolError(f"truncated message: {len(frames)} array frames, expected {len(INSERT_ARRAYS)}", **ctx)
    if len(frames) > len(INSERT_ARRAYS):
        raise ProtocolError(f"extra frames: {len(frames)} array frames, expected {len(INSERT_ARRAYS)}", **ctx)
    arrays = {}
    for entry, (name, dtype, tail), frame in zip(declared, INSERT_ARRAYS, frames):
        if not (isinstance(entry, list) and len(entry) == 3 and entry[0] == name):
            raise ProtocolError(f"arrays entry for {name} must be [{name!r}, dtype, shape], got {entry!r}", **ctx)
        if entry[1] != dtype:
            what = "non-boolean " + name if dtype == "|b1" else f"{name} dtype"
            raise ProtocolError(f"{what}: dtype must be {dtype}, got {entry[1]!r}", **ctx)
        shape = entry[2]
        if not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in shape):
            raise ProtocolError(f"{name} shape must be a list of integers, got {shape!r}", **ctx)
        expected = [count] + [spec.obs_dim if t == "D" else t for t in tail]
        if len(shape) == 2 and len(expected) == 2 and shape[0] == count and shape[1] != spec.obs_dim:
            raise ProtocolError(
                f"wrong {name} width {shape[1]}; this run's observations have {spec.obs_dim} features", **ctx
            )
        if shape != expected:
            raise ProtocolError(f"{name} shape must be {expected}, got {shape}", **ctx)
        buf = _buffer(frame)
        nbytes = int(np.prod(expected)) * np.dtype(dtype).itemsize
        if buf.nbytes != nbytes:
            raise ProtocolError(
                f"frame {name} has {buf.nbytes} bytes, expected {nbytes} for shape {expected} {dtype}", **ctx
            )
        raw = np.frombuffer(buf, dtype=np.uint8 if dtype == "|b1" else np.dtype(dtype)).reshape(expected)
        if dtype == "|b1":
            if raw.size and raw.max() > 1:
                raise ProtocolError(f"non-boolean {name}: values other than 0 and 1", **ctx)
            raw = raw.view(np.bool_)
        arrays[name] = raw
    ctx["count"] = count  # the arrays hold `count` well-formed transitions from here on
    action = arrays["action"]
    if action.min() < 0 or action.max() >= spec.num_actions:
        raise ProtocolError(
            f"action out of range: values must be in [0, {spec.num_actions - 1}], got [{action.min()}, {action.max()}]",
            **ctx,
        )
    reward = arrays["reward"]
    if not np.isfinite(reward).all():
        raise ProtocolError("non-finite reward", **ctx)
    low, high = spec.reward_range
    if reward.min() < low or reward.max() > high:
        raise ProtocolError(
            f"reward out of range: this environment's rewards lie in [{low}, {high}], "
            f"got [{reward.min()}, {reward.max()}]",
            **ctx,
        )
    return Insert(header["actor"], seq, member, count, **arrays)


def encode_insert(actor: str, seq: int, member: int, obs, action, reward, next_obs, terminal) -> list:
    """Header plus five contiguous arrays ready for send_multipart(copy=False)."""
    arrays = [
        np.ascontiguousarray(obs, dtype=np.bool_),
        np.ascontiguousarray(action, dtype=np.int64),
        np.ascontiguousarray(reward, dtype=np.float32),
        np.ascontiguousarray(next_obs, dtype=np.bool_),
        np.ascontiguousarray(terminal, dtype=np.bool_),
    ]
    header = pack(
        {
            "type": "insert",
            "actor": actor,
            "seq": seq,
            "member": member,
            "count": int(arrays[1].shape[0]),
            "arrays": [[name, a.dtype.str, list(a.shape)] for (name, _, _), a in zip(INSERT_ARRAYS, arrays)],
        }
    )
    return [header, *arrays]


def decode_reply(frame: Any) -> dict:
    try:
        reply = msgpack.unpackb(_buffer(frame), raw=False)
    except Exception:
        raise ProtocolError("garbage reply from the replay service") from None
    if not isinstance(reply, dict) or reply.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(f"reply of an unknown protocol version: {reply!r}")
    return reply

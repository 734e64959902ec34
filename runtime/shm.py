"""Self-describing shared-memory segments of named numpy arrays.

A segment starts with a small msgpack header (its fields, dtypes, shapes,
offsets and free-form metadata), so another process attaches with the name
alone. Segments are created by one owner, which unlinks them; the supervisor
unlinks any a dead owner left behind (`unlink_segment`). Names start with
`SEGMENT_PREFIX` so tests and the supervisor can find strays in /dev/shm.

Cross-process consistency relies on x86-64 (TSO) ordering of plain stores and
loads: writers publish a counter after the data it covers, readers check
counters after reading data.
"""

from __future__ import annotations

import errno
import os
import secrets
from multiprocessing import shared_memory
from typing import Any

import msgpack
import numpy as np

# Every segment name starts with this, so strays can be found in /dev/shm. MBGEN_SHM_PREFIX narrows it
# (it must start with "mbgen_"): the test suite gives each session its own, so that concurrent sessions
# on one machine never mistake each other's segments for their own leftovers.
SEGMENT_PREFIX = os.environ.get("MBGEN_SHM_PREFIX", "mbgen_")
if not SEGMENT_PREFIX.startswith("mbgen_"):
    raise ValueError(f"MBGEN_SHM_PREFIX must start with mbgen_, got {SEGMENT_PREFIX!r}")
_ALIGN = 64
_HEADER_ROOM = 4096


def new_run_id() -> str:
    return f"{os.getpid():x}{secrets.token_hex(3)}"


def segment_name(run_id: str, role: str) -> str:
    return f"{SEGMENT_PREFIX}{run_id}_{role}"


class SharedMemoryFull(OSError):
    """/dev/shm cannot hold a segment: a clean refusal naming the room needed, never a SIGBUS later."""


def reserve(name: str, size: int) -> None:
    """Create segment `name` with all `size` bytes allocated (posix_fallocate), mode 0600.

    A tmpfs hands out pages when they are first touched, so a segment made with ftruncate alone maps
    fine on a full /dev/shm and the first write past the free room kills its writer with SIGBUS.
    Allocating up front turns that into an error here, before anything is mapped."""
    path = os.path.join("/dev/shm", name)
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as error:
        os.unlink(path)
        if error.errno in (errno.ENOSPC, errno.ENOMEM, errno.EFBIG):
            free = shm_free_bytes()
            raise SharedMemoryFull(
                error.errno,
                f"/dev/shm has no room for segment {name}: it needs {size / 2**20:,.1f} MiB, "
                f"{free / 2**20:,.1f} MiB are free (free some, or lower --capacity / --seeds)",
            ) from None
        raise
    finally:
        os.close(fd)


def shm_free_bytes() -> int:
    stat = os.statvfs("/dev/shm")
    return stat.f_bavail * stat.f_frsize


def _align(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


class Segment:
    """Named numpy arrays laid out in one shared-memory block."""

    def __init__(self, shm: shared_memory.SharedMemory, fields: list, meta: dict, owner: bool):
        self._shm = shm
        self.name = shm.name
        self.meta = meta
        self.owner = owner
        self.arrays: dict[str, np.ndarray] = {}
        for field_name, dtype, shape, offset in fields:
            count = int(np.prod(shape)) if shape else 1
            self.arrays[field_name] = np.ndarray(shape, dtype=np.dtype(dtype), buffer=shm.buf, offset=offset)
            assert offset + count * np.dtype(dtype).itemsize <= shm.size

    @classmethod
    def create(cls, name: str, spec: dict[str, tuple[Any, tuple[int, ...]]], meta: dict | None = None) -> "Segment":
        """Create (zeroed, every page reserved: `reserve`) with fields {name: (dtype, shape)}."""
        meta = meta or {}
        fields, offset = [], _HEADER_ROOM
        for field_name, (dtype, shape) in spec.items():
            dtype = np.dtype(dtype)
            shape = tuple(int(s) for s in shape)
            fields.append([field_name, dtype.str, list(shape), offset])
            offset = _align(offset + int(np.prod(shape)) * dtype.itemsize)
        header = msgpack.packb({"fields": fields, "meta": meta})
        if len(header) + 8 > _HEADER_ROOM:
            raise ValueError(f"segment {name}: header of {len(header)} bytes exceeds {_HEADER_ROOM - 8}")
        reserve(name, offset)
        try:
            shm = shared_memory.SharedMemory(name=name)  # maps the reserved file
        except BaseException:
            os.unlink(os.path.join("/dev/shm", name))
            raise
        try:
            shm.buf[:8] = len(header).to_bytes(8, "little")
            shm.buf[8 : 8 + len(header)] = header
            segment = cls(shm, fields, meta, owner=True)
        except BaseException:
            shm.close()
            shm.unlink()
            raise
        return segment  # fallocated pages read as zeros

    @classmethod
    def attach(cls, name: str) -> "Segment":
        shm = shared_memory.SharedMemory(name=name)
        size = int.from_bytes(bytes(shm.buf[:8]), "little")
        header = msgpack.unpackb(bytes(shm.buf[8 : 8 + size]))
        return cls(shm, header["fields"], header["meta"], owner=False)

    def __getitem__(self, field_name: str) -> np.ndarray:
        return self.arrays[field_name]

    @property
    def nbytes(self) -> int:
        return self._shm.size

    def close(self) -> None:
        """Drop this process's mapping; the owner also unlinks the name."""
        if self._shm is None:
            return
        self.arrays.clear()
        shm, self._shm = self._shm, None
        try:
            shm.close()
        except BufferError:
            # Views handed out (e.g. torch.from_numpy) still reference the buffer;
            # the mapping is released when they are collected.
            pass
        if self.owner:
            unlink_segment(shm.name)

    def __enter__(self) -> "Segment":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def unlink_segment(name: str) -> bool:
    """Remove a segment by name if it exists; True if something was removed."""
    try:
        shm = shared_memory.SharedMemory(name=name)
    except FileNotFoundError:
        return False
    shm.close()
    try:
        shm.unlink()
    except FileNotFoundError:
        return False
    return True


def leftover_segments(prefix: str = SEGMENT_PREFIX) -> list[str]:
    """Segments with our prefix in /dev/shm (what a clean exit must leave empty)."""
    try:
        return sorted(n for n in os.listdir("/dev/shm") if n.startswith(prefix))
    except FileNotFoundError:
        return []

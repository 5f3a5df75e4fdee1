"""Memory the caller made, registered with a local agent where it lies (no copy)."""

from __future__ import annotations

import mmap
import os
from typing import Any, Iterable, Optional, Tuple

import numpy as np

from . import _braid
from ._errors import BraidError


def _refuse(message: str) -> BraidError:
    return BraidError(_braid.STATUS_CODES["InvalidArgument"], "InvalidArgument", message)


def _mapping_of(address: int, nbytes: int) -> Tuple[int, int, int, str]:
    """(start, end, file offset, path) of this process's mapping holding the range."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if start <= address and address + nbytes <= end:
                path = fields[5].strip() if len(fields) > 5 else ""
                return start, end, int(fields[2], 16), path
    raise _refuse(f"{nbytes} bytes at {address:#x} do not lie in one mapping of this process")


class RegisteredBuffer:
    """The caller's object, registered where it lies: ``id``, ``nbytes``, ``remote(vqp)`` as for a
    Buffer. Keeps the object alive; deregistered when dropped (or ``close()``)."""

    def __init__(self, agent: Any, registrar: Any, obj: Any, region_id: int, nbytes: int,
                 grants: Iterable[int]) -> None:
        self._agent, self._registrar, self.obj = agent, registrar, obj
        self.id, self.nbytes = region_id, nbytes
        self._remote = {}
        for vqp in grants:
            self._remote[vqp] = self._agent._native.grant_access(region_id, vqp)

    def remote(self, vqp_id: int) -> Optional[Any]:
        return self._remote.get(vqp_id)

    def grant(self, vqp_id: int) -> Any:
        if vqp_id not in self._remote:
            self._remote[vqp_id] = self._agent._native.grant_access(self.id, vqp_id)
        return self._remote[vqp_id]

    def close(self) -> None:
        if self.obj is not None:
            try:
                self._agent._native.deregister_memory(self.id)
            finally:
                self.obj = None
                self._registrar = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # the agent may be gone; its session's end deregisters the region
            pass


def register(agent: Any, obj: Any, grant: Iterable[int], label: str) -> RegisteredBuffer:
    try:
        view = memoryview(obj)
    except TypeError:
        raise _refuse(f"cannot register a {type(obj).__name__}: it exposes no buffer") from None
    if not view.contiguous or view.readonly:
        raise _refuse("the buffer must be contiguous and writable")
    nbytes = view.nbytes
    address = np.frombuffer(view, dtype=np.uint8).__array_interface__["data"][0]
    start, end, offset, path = _mapping_of(address, nbytes)
    if not path.startswith("/memfd:"):
        where = path or "anonymous memory"
        raise _refuse(
            f"the buffer at {address:#x} lies in {where[:100]}, which the agent cannot map: "
            "register memory of a memfd mapped with MAP_SHARED (os.memfd_create, mmap), or "
            "allocate with Agent.alloc")
    if address % mmap.PAGESIZE != 0:
        raise _refuse(f"the buffer at {address:#x} does not start on a page boundary "
                      f"({mmap.PAGESIZE} bytes): register it from the start of its mapping")
    fd = os.open(f"/proc/self/map_files/{start:x}-{end:x}", os.O_RDWR | os.O_CLOEXEC)
    try:
        try:  # it may not shrink under the agent's mapping (the agent refuses it otherwise)
            import fcntl
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK)
        except OSError:
            pass  # not sealable: the agent's refusal says what to do
        if agent._registrar is None:
            agent._registrar = _braid.FdRegistrar(agent._native)
        grants = list(grant)
        region_id = agent._registrar.register(fd, offset + (address - start), nbytes, grants,
                                              label)
    finally:
        os.close(fd)
    return RegisteredBuffer(agent, agent._registrar, obj, region_id, nbytes, grants)

"""Memory the caller made, registered with a local agent where it lies (no copy)."""

from __future__ import annotations

import os
import stat
from typing import Any, Iterable, NamedTuple, Optional

import numpy as np

from . import _braid
from ._errors import BraidError


def _refuse(message: str) -> BraidError:
    return BraidError(_braid.STATUS_CODES["InvalidArgument"], "InvalidArgument", message)


class _Mapping(NamedTuple):
    start: int
    end: int
    shared: bool  # MAP_SHARED: the agent's mapping of the file sees the same pages
    offset: int   # of the file, at ``start``
    device: int
    inode: int
    path: str     # "" for anonymous memory


def _mapping_of(address: int, nbytes: int) -> _Mapping:
    """This process's mapping holding the range."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if start <= address and address + nbytes <= end:
                major, minor = (int(x, 16) for x in fields[3].split(":"))
                return _Mapping(start, end, fields[1][3] == "s", int(fields[2], 16),
                                os.makedev(major, minor), int(fields[4]),
                                fields[5].strip() if len(fields) > 5 else "")
    raise _refuse(f"{nbytes} bytes at {address:#x} do not lie in one mapping of this process")


def _same_file(fd: int, m: _Mapping) -> bool:
    try:
        st = os.fstat(fd)
    except OSError:  # closed meanwhile
        return False
    return st.st_ino == m.inode and st.st_dev == m.device and stat.S_ISREG(st.st_mode)


def _open_file_of(m: _Mapping) -> int:
    """A new read-write descriptor of the file behind the mapping: reopened from a descriptor
    this process holds on it, else from its path, else through /proc/self/map_files (root)."""
    for name in os.listdir("/proc/self/fd"):
        if _same_file(int(name), m):
            try:
                return os.open(f"/proc/self/fd/{name}", os.O_RDWR | os.O_CLOEXEC)
            except OSError:
                break
    if m.path.startswith("/") and not m.path.endswith(" (deleted)"):
        try:
            fd = os.open(m.path, os.O_RDWR | os.O_CLOEXEC)
            if _same_file(fd, m):
                return fd
            os.close(fd)
        except OSError:
            pass
    try:
        return os.open(f"/proc/self/map_files/{m.start:x}-{m.end:x}", os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        raise _refuse(f"cannot open the file behind the buffer ({m.path[:100]}): {e.strerror}; "
                      "keep a descriptor of it open while registering") from None


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
    m = _mapping_of(address, nbytes)
    if not m.path.startswith("/") or not m.shared:
        where = m.path or "anonymous memory"
        if m.path.startswith("/"):
            where = "a private mapping of " + where  # MAP_PRIVATE: the agent would not see it
        raise _refuse(
            f"the buffer at {address:#x} lies in {where[:120]}, which the agent cannot map: "
            "register memory of a memfd or of a file in /dev/shm or on hugetlbfs, mapped with "
            "MAP_SHARED (mmap), or allocate with Agent.alloc")
    fd = _open_file_of(m)  # the agent guards its mapping against the file being cut short
    try:
        if agent._registrar is None:
            agent._registrar = _braid.FdRegistrar(agent._native)
        grants = list(grant)
        region_id = agent._registrar.register(fd, m.offset + (address - m.start), nbytes, grants,
                                              label)
    finally:
        os.close(fd)
    return RegisteredBuffer(agent, agent._registrar, obj, region_id, nbytes, grants)

"""Sessions, their futures and notification streams: the data path of the braid Python SDK."""

from __future__ import annotations

import asyncio
import concurrent.futures
import operator
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence

from . import _braid
from ._errors import BraidError


@dataclass(frozen=True)
class TransferResult:
    """A finished operation: bytes moved and the work completion's status ("success")."""

    nbytes: int
    wc_status: str


class Future(concurrent.futures.Future):
    """One operation's outcome: ``result(timeout)`` blocks, ``await future`` suspends (asyncio),
    ``done()`` polls. A failed operation raises BraidError. The future keeps the operation's local
    buffer alive until the operation ended."""

    def __init__(self, keep: Any = None) -> None:
        super().__init__()
        self._keep = keep

    def __await__(self):
        return asyncio.wrap_future(self).__await__()

    def _finish(self, code: int, message: str, nbytes: int, wc_status: str) -> None:
        self._keep = None
        if code == 0:
            self.set_result(TransferResult(nbytes, wc_status))
        else:
            self.set_exception(BraidError(code, _braid.status_name(code), message))


@dataclass
class Op:
    """One operation for ``Session.submit_batch``: ``op`` is "write", "read" or
    "write_with_imm"; ``local`` a Buffer of this session's agent; ``remote`` the peer's
    RemoteRegion; ``length`` defaults to the rest of the local buffer after ``local_offset``;
    ``deadline`` in seconds (None: the session's default)."""

    op: str
    local: Any
    remote: Any
    length: Optional[int] = None
    local_offset: int = 0
    remote_offset: int = 0
    imm: int = 0
    deadline: Optional[float] = None

    def native(self) -> Any:
        if not hasattr(self.local, "id") or not hasattr(self.local, "nbytes"):
            raise TypeError("local must be a buffer registered with this session's agent "
                            f"(Agent.alloc or Agent.register), not {type(self.local).__name__}")
        fields = {"local_offset": (self.local_offset, 1 << 64),
                  "remote_offset": (self.remote_offset, 1 << 64), "imm": (self.imm, 1 << 32),
                  "length": (self.length, 1 << 64)}
        ints = {}
        for name, (value, end) in fields.items():
            if value is None:  # the rest of the local buffer (the agent checks every range)
                value = self.local.nbytes - ints["local_offset"]
                if value <= 0:
                    raise ValueError(f"local_offset {ints['local_offset']} is at or past the end "
                                     f"of the {self.local.nbytes}-byte buffer: give a length "
                                     "or a smaller offset")
            ints[name] = operator.index(value)  # an int, or a TypeError
            if not 0 <= ints[name] < end:
                raise ValueError(f"{name} must be from 0 to {end - 1}, not {str(value)[:100]}")
        return _braid.Op(self.op, self.local.id, ints["local_offset"], self.remote,
                         ints["remote_offset"], ints["length"], ints["imm"], self.deadline or 0.0)


class Session:
    """Operations on one connected VQP through its agent. On a local agent (reached as
    "unix:PATH") the operations go through shared-memory rings, else through the gRPC stream;
    ``path`` says which. At most ``window`` operations are in flight: a submission waits for room.
    Use it as a context manager, or call ``close()`` (which waits for what is in flight)."""

    def __init__(self, agent: Any, vqp_id: int, path: str = "auto", ring_entries: int = 1024,
                 busy_poll: bool = False, default_deadline: float = 30.0) -> None:
        pending: Dict[int, Future] = {}
        self._pending = pending
        self._next_token = 0
        # Completions arrive in batches on the native dispatcher's thread. The function holds the
        # pending table, not the session (no cycle: the session is collected when dropped).
        def deliver(items: list) -> None:
            for token, code, message, nbytes, wc_status in items:
                pending.pop(token)._finish(code, message, nbytes, wc_status)

        self._native = _braid.Session(agent._native, vqp_id, deliver, path=path,
                                      ring_entries=ring_entries, busy_poll=busy_poll,
                                      default_timeout=default_deadline)
        self.vqp_id = vqp_id

    @property
    def path(self) -> str:
        return self._native.path

    @property
    def window(self) -> int:
        return self._native.window

    def submit(self, op: Op) -> Future:
        native = op.native()  # a malformed op raises here, before anything is pending
        future = Future(keep=op.local)
        token = self._next_token
        self._next_token += 1
        self._pending[token] = future
        self._native.submit(native, token)
        return future

    def write(self, local: Any, remote: Any, length: Optional[int] = None, local_offset: int = 0,
              remote_offset: int = 0, imm: Optional[int] = None,
              deadline: Optional[float] = None) -> Future:
        """Writes ``local`` (a Buffer) into the peer's ``remote`` region; with ``imm``, the peer
        is notified (a write with immediate)."""
        kind = "write" if imm is None else "write_with_imm"
        return self.submit(Op(kind, local, remote, length, local_offset, remote_offset, imm or 0,
                              deadline))

    def read(self, local: Any, remote: Any, length: Optional[int] = None, local_offset: int = 0,
             remote_offset: int = 0, deadline: Optional[float] = None) -> Future:
        """Reads the peer's ``remote`` region into ``local`` (a Buffer)."""
        return self.submit(Op("read", local, remote, length, local_offset, remote_offset, 0,
                              deadline))

    def submit_batch(self, ops: Sequence[Op]) -> List[Future]:
        """Submits ``ops`` in order, as few messages (gRPC) or doorbells (ring) as the window
        allows; one future each."""
        native = [op.native() for op in ops]
        futures = [Future(keep=op.local) for op in ops]
        first = self._next_token
        self._next_token += len(ops)
        self._pending.update(zip(range(first, first + len(ops)), futures))
        self._native.submit_batch(native, first)
        return futures

    def flush(self, timeout: float = 30.0) -> None:
        """Waits until nothing is in flight; BraidError (kDeadlineExceeded) after ``timeout``."""
        self._native.flush(timeout)

    def cancel(self, timeout: float = 30.0) -> None:
        """Every operation in flight fails with Cancelled, and so does every later submission;
        returns only once the agent reports that no transfer uses the buffers this session's
        operations named, so no more bytes reach them (transfers of other sessions on the same
        buffers are waited for too). BraidError (DeadlineExceeded) after ``timeout`` seconds."""
        self._native.cancel_and_wait(timeout)

    def close(self) -> None:
        self._native.close()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


@dataclass(frozen=True)
class Notification:
    """A write with immediate that arrived: its VQP, sequence number (0, 1, 2 ... per VQP),
    immediate, length and work-completion status."""

    vqp_id: int
    seq: int
    imm: int
    byte_len: int
    wc_status: str


class Notifications:
    """Every write with immediate that arrives on a VQP, in order: iterate (``for n in ...``) or
    ``async for``. Subscribed when constructed: nothing that arrives later is missed. Iteration
    ends when the VQP is destroyed; it raises BraidError when the reader fell behind (kNoResource)
    or the agent went away."""

    def __init__(self, agent: Any, vqp_id: int, path: str = "auto",
                 ring_entries: int = 16384) -> None:
        self._native = _braid.Notifications(agent._native, vqp_id, path=path,
                                            ring_entries=ring_entries)

    @property
    def path(self) -> str:
        return self._native.path

    def next(self, timeout: Optional[float] = None) -> Optional[Notification]:
        """The next notification; None after ``timeout`` seconds (None: wait until one comes or
        the stream ends, then StopIteration)."""
        waited = 0.0
        while True:
            step = 0.1 if timeout is None else min(0.1, max(timeout - waited, 0.0))
            n = self._native.next(step)
            if n is not None:
                return Notification(*n)
            if self._native.ended():
                self._native.raise_if_failed()
                raise StopIteration
            waited += step
            if timeout is not None and waited >= timeout:
                return None

    def __iter__(self) -> Iterator[Notification]:
        return self

    def __next__(self) -> Notification:
        n = self.next()
        assert n is not None
        return n

    def __aiter__(self) -> "Notifications":
        return self

    async def __anext__(self) -> Notification:
        while True:
            try:
                n = await asyncio.to_thread(self.next, 0.1)
            except StopIteration:
                raise StopAsyncIteration from None
            if n is not None:
                return n

    def close(self) -> None:
        self._native.close()

    def __enter__(self) -> "Notifications":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

"""Events: an agent's state changes (WatchEvents) as an iterator and an async iterator."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Iterator

from . import _braid
from ._errors import BraidError


def _error(name: str, message: str) -> BraidError:
    return BraidError(_braid.STATUS_CODES[name], name, message)


@dataclass(frozen=True)
class Event:
    """One state change: ``kind`` (qp_died, qp_recovered, vqp_connected, vqp_destroyed,
    device_drained, ...), the VQP (0: none), the physical QP (-1: none), the device and why."""

    seq: int
    time_unix_ns: int
    kind: str
    vqp_id: int
    qp_index: int
    device: str
    cause: str


class Events:
    """The events of one agent from the moment of subscription, in order (``seq`` has no gaps).
    Ends with BraidError when the agent ends the stream (it stopped, or this reader fell
    behind: code_name "NoResource"); ``close()`` ends it from here."""

    def __init__(self, stub: Any) -> None:
        from .v1 import agent_pb2

        self._call = stub.WatchEvents(agent_pb2.WatchEventsRequest())
        first = next(self._call)  # the agent confirms the subscription first
        if not first.subscribed:
            raise _error("IoError", "the agent did not confirm the events subscription")

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        import grpc

        try:
            r = next(self._call)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.CANCELLED:
                raise StopIteration from None
            name = "NoResource" if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED else "IoError"
            raise _error(name, e.details() or "the events stream ended") from None
        e = r.event
        return Event(e.seq, e.time_unix_ns, e.kind, e.vqp_id, e.qp_index, e.device, e.cause)

    def __aiter__(self) -> "Events":
        return self

    async def __anext__(self) -> Event:
        try:
            return await asyncio.to_thread(self.__next__)
        except StopIteration:
            raise StopAsyncIteration from None

    def close(self) -> None:
        self._call.cancel()

    def __enter__(self) -> "Events":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

"""braid: the Python SDK of Braid, a multipath RDMA data plane.

    import braid, numpy as np
    a, b = braid.Agent("unix:/run/braid/a.sock"), braid.Agent("10.0.0.2:50051")
    with braid.connect(a, b, qps=8) as conn:
        src = a.alloc(1 << 20)
        dst = b.alloc(1 << 20, grant=[conn.vqp_b])
        np.frombuffer(src, dtype=np.uint8)[:] = 7          # zero copy: the registered memory
        with conn.session() as s:
            s.write(src, dst.remote(conn.vqp_b)).result()

A call the agent refuses raises BraidError (code, code_name such as "NotFound", message). Blocking calls release
the GIL; completions resolve futures from the SDK's own threads.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Iterable, List, Optional

from . import _braid, registered
from ._errors import BraidError
from .events import Event, Events
from .session import Future, Notification, Notifications, Op, Session, TransferResult

__version__ = _braid.__version__  # Braid's version (the CMake project's), the agents' too
RemoteRegion = _braid.RemoteRegion
Buffer = _braid.Region
MemfdBuffer = _braid.MemfdBuffer

__all__ = ["Agent", "BraidError", "Buffer", "Connection", "Event", "Events", "Future", "MemfdBuffer",
           "Notification",
           "Notifications", "Op", "RemoteRegion", "Session", "TransferResult", "connect"]


class Agent:
    """A braidd agent: ``address`` is "host:port" or "unix:/path". TLS with ``tls=(ca, cert,
    key)`` (PEM file paths; cert and key for mutual TLS, may be ""); ``token`` a bearer token
    (sent only over TLS). Waits until the agent answers.

    With ``hold`` (the default) the VQPs and regions made through this Agent live at most as
    long as it: the agent destroys them once this Agent is gone, this process exits or is
    killed, or its connection drops (``Connection.release()`` then keeps a connection only
    while the Agent lives). ``hold=False`` for VQPs meant to outlive this process."""

    def __init__(self, address: str, tls: Optional[tuple] = None, token: str = "",
                 call_timeout: float = 10.0, connect_timeout: float = 10.0,
                 hold: bool = True) -> None:
        ca, cert, key = (tuple(tls) + ("", "", ""))[:3] if tls else ("", "", "")
        self._native = _braid.AgentClient(address, tls_ca=ca, tls_cert=cert, tls_key=key,
                                          token=token, call_timeout=call_timeout,
                                          connect_timeout=connect_timeout, hold=hold)
        self._registrar = None  # the local session RegisterFd uses, made on first use
        self._tls = (ca, cert, key) if tls else None
        self._token = token
        self._channel = None

    @property
    def control(self) -> Any:
        """The generated gRPC stub (``braid.v1.agent_pb2_grpc.AgentStub``) on a channel of this
        package's grpcio, with the same address, TLS and token: every RPC of braid.v1.Agent."""
        import grpc
        from .v1 import agent_pb2_grpc

        if self._channel is None:
            if self._tls is None:
                self._channel = grpc.insecure_channel(self.address)
            else:
                ca, cert, key = (open(p, "rb").read() if p else None for p in self._tls)
                creds = grpc.ssl_channel_credentials(ca, key, cert)
                if self._token:
                    creds = grpc.composite_channel_credentials(
                        creds, grpc.access_token_call_credentials(self._token))
                self._channel = grpc.secure_channel(self.address, creds)
        return agent_pb2_grpc.AgentStub(self._channel)

    @property
    def address(self) -> str:
        return self._native.target

    @property
    def lease(self) -> int:
        """The agent's lease this Agent holds (``hold``); 0 without one."""
        return self._native.lease

    def info(self) -> Dict[str, Any]:
        return self._native.info()

    def serving(self, service: str = "") -> bool:
        """The agent's gRPC health: "" (readiness) is whether it takes new work, "liveness"
        only whether its data plane turns (an agent whose devices are all down or drained is
        alive, not ready). An unknown service raises BraidError."""
        return self._native.serving(service)

    def vqps(self) -> List[Dict[str, Any]]:
        return self._native.list_vqps()

    def regions(self) -> List[int]:
        return self._native.list_regions()

    def destroy_vqp(self, vqp_id: int) -> None:
        self._native.destroy_vqp(vqp_id)

    def alloc(self, nbytes: int, label: str = "", grant: Iterable[int] = ()) -> Any:
        """``nbytes`` of registered memory, mapped here: a buffer usable as a numpy array with no
        copy (``numpy.frombuffer(buf, dtype)``). For a local agent ("unix:PATH" with its session
        socket) it is a memfd of this process, sealed and registered where it lies (a
        MemfdBuffer); for another, the agent's shared-memory region mapped here (a Buffer). The
        VQPs in ``grant`` may reach it over the wire (``buf.remote(vqp)`` is what their peers
        target; ``buf.grant(vqp)`` adds one). It is deregistered when the buffer and every array
        over it are gone."""
        if self._local():
            if self._registrar is None:
                self._registrar = _braid.FdRegistrar(self._native)
            return _braid.MemfdBuffer(self._native, self._registrar, nbytes, list(grant), label)
        return self._native.register_memory(nbytes, label, list(grant))

    def _local(self) -> bool:
        address = self.address
        return address.startswith("unix:") and os.path.exists(address[5:] + ".session")

    def register(self, obj: Any, grant: Iterable[int] = (), label: str = "") -> Any:
        """Registers memory the caller made, where it lies (no copy): anything exposing a
        contiguous writable buffer over a memfd mapped with MAP_SHARED, from a page boundary (a
        numpy array over ``mmap.mmap(os.memfd_create(...), n)``), with a local agent (reached as
        "unix:PATH"). Returns a RegisteredBuffer (``id``, ``nbytes``, ``remote(vqp)``) that keeps
        ``obj`` alive while registered. A Buffer from ``alloc`` is returned as it is. Anything
        else is refused with BraidError saying why."""
        if isinstance(obj, (Buffer, MemfdBuffer)):
            return obj
        return registered.register(self, obj, grant, label)

    def close(self) -> None:
        """Ends this Agent's lease (``hold``): the agent has given back the VQPs and regions made
        through it when this returns, even while buffers or sessions made from it are still
        referenced here (their memory stays mapped; what they would reach on the agent is gone).
        Also closes the channel of ``control`` and ``events()`` and lets go of the local session
        ``register`` uses. Calls that create VQPs or regions fail afterwards; the ``with`` block
        calls it on leaving. Without ``hold`` nothing on the agent changes."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        self._registrar = None
        self._native.end_hold()

    def __enter__(self) -> "Agent":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def events(self) -> "Events":
        """The agent's state changes as they happen (WatchEvents): ``for e in agent.events()``
        or ``async for``; each an ``Event``. Subscribed when this returns."""
        return Events(self.control)

    def session(self, vqp_id: int, **options: Any) -> Session:
        """A Session on this agent's VQP ``vqp_id`` (see Session for the options)."""
        return Session(self, vqp_id, **options)

    def notifications(self, vqp_id: int, **options: Any) -> Notifications:
        """The write-with-immediate notifications arriving on VQP ``vqp_id``."""
        return Notifications(self, vqp_id, **options)


class Connection:
    """Two agents joined by a virtual QP: ``vqp_a`` on agent ``a``, ``vqp_b`` on agent ``b``.
    ``close()`` (or leaving the ``with`` block) destroys both VQPs unless ``release()``d."""

    def __init__(self, a: Agent, b: Agent, native: Any) -> None:
        self.a, self.b, self._native = a, b, native

    @property
    def vqp_a(self) -> int:
        return self._native.vqp_a

    @property
    def vqp_b(self) -> int:
        return self._native.vqp_b

    def session(self, **options: Any) -> Session:
        """A Session on ``vqp_a`` through agent ``a``."""
        return self.a.session(self.vqp_a, **options)

    def release(self) -> None:
        self._native.release()

    def close(self) -> None:
        self._native.close()

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def connect(a: Agent, b: Agent, qps: int = 8, scheme: str = "spray",
            devices: Iterable[str] = (), label: str = "") -> Connection:
    """Creates a VQP of ``qps`` QPs (``scheme`` "spray" or "dqplb") on each agent and connects
    them; on any failure nothing is left behind."""
    return Connection(a, b, _braid.connect(a._native, b._native, qps=qps, scheme=scheme,
                                           devices=list(devices), label=label))

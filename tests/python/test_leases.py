"""The Python SDK's leases against two real agents (the fixture `agents`, both paths): what a
client made goes when it is SIGKILLed, stops answering, or closes its Agent; without ``hold`` it
stays; with the agent's grace a dropped connection keeps it. Nothing is left on the agents after
each test (the fixture checks)."""

import gc
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import braid
from conftest import MiB, mib_pair, pattern


_CLIENT = """
import sys, braid
a, b = (braid.Agent(x, hold=sys.argv[3] == "1") for x in sys.argv[1:3])
conn = braid.connect(a, b, qps=4)
conn.release()
src = a.alloc(1 << 20)
dst = b.alloc(1 << 20, grant=[conn.vqp_b])
remote = dst.remote(conn.vqp_b)
s = conn.session()
s.write(src, remote).result(timeout=30)
print(conn.vqp_a, conn.vqp_b, flush=True)
while True:
    futures = [s.write(src, remote) for _ in range(64)]
    for f in futures:
        f.result(timeout=30)
"""


def _client(a, b, hold: bool):
    """The client process, once it is writing: (process, vqp on A, vqp on B)."""
    p = subprocess.Popen([sys.executable, "-c", _CLIENT, a.address, b.address, str(int(hold))],
                         stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    assert line, f"the client process exited: {p.wait()}"
    vqp_a, vqp_b = (int(x) for x in line.split())
    return p, vqp_a, vqp_b


def _wait_until(condition, seconds: float) -> bool:
    deadline = time.time() + seconds
    while not condition():
        if time.time() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_killed_client_s_vqps_and_regions_are_given_back_and_others_keep_working(agents):
    """A client process SIGKILLed while it writes leaves nothing on either agent: its Hold call
    ends with its connection, the agents destroy its VQPs (its writes in flight end) and deregister
    its regions once nothing of them is in flight. Another client's connection, made before,
    moves verified bytes after."""
    _, _, a, b, _ = agents
    with braid.connect(a, b, qps=2) as other:
        src, dst, src_view, dst_view, remote = mib_pair(a, b, other)
        p, vqp_a, vqp_b = _client(a, b, hold=True)
        assert {v["vqp_id"] for v in a.vqps()} == {other.vqp_a, vqp_a}
        assert len(a.regions()) == 2 and len(b.regions()) == 2
        time.sleep(0.3)  # writing
        p.kill()
        p.wait()
        gone = _wait_until(lambda: [v["vqp_id"] for v in a.vqps()] == [other.vqp_a] and
                           [v["vqp_id"] for v in b.vqps()] == [other.vqp_b] and
                           len(a.regions()) == 1 and len(b.regions()) == 1, 10)
        assert gone, f"left behind: A {a.vqps()} {a.regions()}, B {b.vqps()} {b.regions()}"
        with other.session() as s:
            src_view[:] = pattern(MiB, 11)
            s.write(src, remote).result(timeout=30)
            assert np.array_equal(dst_view, src_view)
        del src_view, dst_view


def test_closing_an_agent_ends_its_lease_at_once_though_its_objects_are_still_referenced(agents):
    """Leaving a ``with braid.Agent(...)`` block (close()) ends the Agent's lease: when it returns
    the agent has destroyed the lease's VQPs and deregistered its regions, although a buffer and a
    released connection made through it are still referenced here (before, only the garbage
    collector ended it). Creating more through it is refused, saying why; a memfd buffer of a
    local agent belongs to its session and goes with its last reference."""
    _, _, a, b, path = agents
    with braid.Agent(a.address) as mine:
        assert mine.lease != 0
        conn = braid.connect(mine, b, qps=1)
        conn.release()
        buf = mine.alloc(MiB, label="closing")
        assert {v["vqp_id"] for v in a.vqps()} == {conn.vqp_a}
        assert buf.id in a.regions()
    assert a.vqps() == [], a.vqps()  # at once: no wait, no garbage collection
    if path == "grpc":
        assert buf.id not in a.regions(), a.regions()
    else:
        assert buf.id in a.regions()  # the registration session's, alive while buf is
    with pytest.raises(braid.BraidError, match="ended its lease"):
        braid.connect(mine, b, qps=1)
    assert [v["vqp_id"] for v in b.vqps()] == [conn.vqp_b]  # the refused connect left nothing
    mine.close()  # again: nothing more to do
    b.destroy_vqp(conn.vqp_b)
    del buf, conn
    gc.collect()
    assert _wait_until(lambda: a.regions() == [], 10), a.regions()


def test_without_hold_a_killed_client_s_connection_stays_for_whoever_takes_it_over(agents):
    """``hold=False``: the VQPs outlive the process that made them (what an orchestrator wants);
    only its registrations go (its session on the ring path, or left for the owner to deregister
    over gRPC)."""
    _, _, a, b, _ = agents
    p, vqp_a, vqp_b = _client(a, b, hold=False)
    p.kill()
    p.wait()
    time.sleep(0.5)
    assert vqp_a in [v["vqp_id"] for v in a.vqps()]
    assert vqp_b in [v["vqp_id"] for v in b.vqps()]
    a.destroy_vqp(vqp_a)
    b.destroy_vqp(vqp_b)
    for agent in (a, b):
        for region in agent.regions():
            agent._native.deregister_memory(region)


def test_a_client_that_stops_answering_loses_what_it_held_after_the_keepalive(agents):
    """A client whose host vanishes sends no FIN. The agents ping its connections (here every
    0.5 s, 0.5 s to answer) and close them when it stops answering (SIGSTOP: its kernel still
    acknowledges TCP, but nothing answers HTTP/2), which ends its lease: its VQPs go, and over
    gRPC its regions. It was connected for seconds first: pings go on over an idle connection
    (the ring path's: its operations take the rings)."""
    pa, pb, a, b, path = agents
    for p in (pa, pb):
        p.kill()
        p.args += ["--client-keepalive-ms", "500", "--client-keepalive-timeout-ms", "500"]
        p.start()
    proc, vqp_a, vqp_b = _client(a, b, hold=True)
    try:
        time.sleep(3)
        assert vqp_a in [v["vqp_id"] for v in a.vqps()]
        proc.send_signal(signal.SIGSTOP)
        t0 = time.monotonic()
        gone = _wait_until(lambda: a.vqps() == [] and b.vqps() == [] and
                           (path == "ring" or (a.regions() == [] and b.regions() == [])), 15)
        assert gone, f"left behind: A {a.vqps()} {a.regions()}, B {b.vqps()} {b.regions()}"
        print(f"given back {time.monotonic() - t0:.1f} s after the client stopped answering")
    finally:
        proc.kill()
        proc.wait()


class _Proxy:
    """A TCP relay on 127.0.0.1 to `target` ("host:port"). drop() closes every connection it
    relays (both ends: the client sees its connection drop); while refusing, new connections are
    closed as soon as they are accepted."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.refusing = False
        self.lock = threading.Lock()
        self.open = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                down, _ = self.listener.accept()
            except OSError:
                return  # closed
            if self.refusing:
                down.close()
                continue
            up = socket.create_connection(self.target)
            with self.lock:
                self.open += [down, up]
            for src, dst in ((down, up), (up, down)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def drop(self) -> None:
        with self.lock:
            relayed, self.open = self.open, []
        for s in relayed:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self.listener.close()
        self.drop()


def test_a_lease_outlives_a_dropped_connection_by_the_agent_s_grace(tmp_path):
    """With the agent's lease_grace_ms, a client whose connection drops keeps its lease: the SDK
    takes it over with a new Hold call as soon as it is connected again, and what the lease holds
    stays (also past the grace). A connection that stays down past the grace loses the lease:
    what it held is given back, and the client is told when it next creates something."""
    from conftest import AgentProcess
    pa = AgentProcess("py-grace", 2, str(tmp_path))
    proxy = None
    try:
        pa.kill()
        pa.args += ["--lease-grace-ms", "2000"]
        pa.start()
        direct = braid.Agent(pa.tcp, hold=False)
        proxy = _Proxy(pa.tcp)
        client = braid.Agent(proxy.address, hold=True)
        lease = client.lease
        first = client.alloc(MiB)
        assert len(direct.regions()) == 1
        proxy.drop()
        time.sleep(3.0)  # past the grace: the lease lives on only if the client took it over
        assert client.lease == lease
        second = client.alloc(MiB)  # joins the same lease
        assert len(direct.regions()) == 2

        proxy.refusing = True  # down for longer than the grace
        proxy.drop()
        assert _wait_until(lambda: direct.regions() == [], 10), direct.regions()
        proxy.refusing = False
        with pytest.raises(braid.BraidError, match="lease"):
            client.alloc(MiB)
        del first, second
        client.close()

        # Closed on purpose, a client gives its lease back at once, not after the grace.
        leaving = braid.Agent(pa.tcp, hold=True)
        conn = braid.connect(leaving, direct, qps=1)
        conn.release()  # its VQP on the leaving side is the lease's now; the other is direct's
        mine, theirs = conn.vqp_a, conn.vqp_b
        del conn
        leaving.close()
        del leaving
        gc.collect()
        assert _wait_until(lambda: [v["vqp_id"] for v in direct.vqps()] == [theirs], 1.0), \
            (mine, direct.vqps())
        direct.destroy_vqp(theirs)
        direct.close()
    finally:
        if proxy is not None:
            proxy.close()
        pa.close()

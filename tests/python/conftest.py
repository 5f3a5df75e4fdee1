"""Two real braidd agents for the Python SDK's tests, reached the way a parameter says:
"ring" over their Unix sockets (sessions and notification streams take the shared-memory rings),
"grpc" over TCP. After each test the agents hold no VQP and no region, and no more descriptors or
threads than before it (nothing leaked)."""

import gc
import os
import shutil
import signal
import subprocess
import tempfile
import time

import numpy as np
import pytest

import braid

MiB = 1 << 20


def pattern(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8)


def mib_pair(a, b, conn):
    """1 MiB on each side of `conn` (b's granted to its VQP), their numpy views, and what a
    writes to: (src, dst, src_view, dst_view, remote)."""
    src = a.alloc(MiB)
    dst = b.alloc(MiB, grant=[conn.vqp_b])
    return (src, dst, np.frombuffer(src, dtype=np.uint8), np.frombuffer(dst, dtype=np.uint8),
            dst.remote(conn.vqp_b))


BRAIDD = os.environ.get("BRAID_BRAIDD", "")


class AgentProcess:
    """One braidd with two soft NICs, plaintext TCP and a Unix socket; killed on close()."""

    def __init__(self, name: str, index: int, workdir: str) -> None:
        self.name = name
        base = 100 + os.getpid() % 150
        nics = [f"soft{i}=127.{base}.{index + 11}.{i + 1}" for i in range(2)]
        self.tcp = f"127.0.0.1:{_tcp_port(index)}"
        self.unix = os.path.join(workdir, f"{name}.sock")
        self.region_dir = tempfile.mkdtemp(prefix="braid-py-", dir="/dev/shm")
        args = [BRAIDD, "--agent-id", name, "--grpc-tcp", self.tcp,
                "--metrics", f"127.0.0.1:{_tcp_port(index) + 1}", "--region-dir",
                self.region_dir, "--log-level", "warn", "--soft-port", str(_soft_port()),
                "--plaintext", "--anonymous-role", "admin", "--grpc-unix", self.unix]
        for nic in nics:
            args += ["--soft-nic", nic]
        self.args = args
        self.proc = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(self.args)
        deadline = time.time() + 20
        while time.time() < deadline:
            if os.path.exists(self.unix) and os.path.exists(self.unix + ".session"):
                return
            assert self.proc.poll() is None, f"braidd {self.name} exited: {self.proc.returncode}"
            time.sleep(0.02)
        raise RuntimeError(f"braidd {self.name} did not start")

    def held(self):
        """(descriptors, threads) the agent holds: the fewest over ~100 ms (one a thread holds for
        a moment is no leak). Left out: gRPC's callback executor ("default-executor" threads, a
        pool that grows on demand up to twice the cores and keeps its threads) and its global
        timer thread ("grpc_global_timer", started once, the first time the agent calls a peer):
        process-wide, not per-call resources."""
        fds, threads = [], []
        for _ in range(10):
            fds.append(len(os.listdir(f"/proc/{self.proc.pid}/fd")))
            names = []
            for task in os.listdir(f"/proc/{self.proc.pid}/task"):
                try:
                    with open(f"/proc/{self.proc.pid}/task/{task}/comm") as f:
                        names.append(f.read().strip())
                except OSError:
                    pass  # the thread ended meanwhile
            threads.append(sum(not n.startswith(("default-executo", "grpc_global_tim"))
                               for n in names))
            time.sleep(0.01)
        return min(fds), min(threads)

    def stop(self) -> None:
        """SIGSTOP, returning once every thread of the agent has stopped: the signal is delivered
        asynchronously, and an agent told to stop acknowledged a write after the kill call."""
        self.proc.send_signal(signal.SIGSTOP)
        deadline = time.time() + 10
        while time.time() < deadline:
            states = []
            for task in os.listdir(f"/proc/{self.proc.pid}/task"):
                try:
                    with open(f"/proc/{self.proc.pid}/task/{task}/stat") as f:
                        states.append(f.read().rsplit(")", 1)[1].split()[0])
                except OSError:
                    pass  # the thread ended meanwhile
            if states and all(s in ("T", "t") for s in states):
                return
            time.sleep(0.001)
        raise RuntimeError(f"braidd {self.name} did not stop")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=20)
        for path in (self.unix, self.unix + ".session"):
            if os.path.exists(path):
                os.unlink(path)

    def close(self) -> None:
        self.kill(signal.SIGTERM)
        shutil.rmtree(self.region_dir, ignore_errors=True)


def _tcp_port(index: int) -> int:
    # Above the ephemeral range and the C++ harness's ports (20000 to 60000).
    return 61000 + (os.getpid() % 500) * 8 + index * 2


def _soft_port() -> int:
    return 61000 + (os.getpid() % 500) * 8 + 7


@pytest.fixture(params=["ring", "grpc"])
def agents(request, tmp_path):
    """(agent process A, B, braid.Agent a, b, path)."""
    assert BRAIDD, "set BRAID_BRAIDD to the braidd binary (ctest does)"
    pa = AgentProcess("py-a", 0, str(tmp_path))
    pb = AgentProcess("py-b", 1, str(tmp_path))
    try:
        if request.param == "ring":
            a, b = braid.Agent("unix:" + pa.unix), braid.Agent("unix:" + pb.unix)
        else:
            a, b = braid.Agent(pa.tcp), braid.Agent(pb.tcp)
        a.vqps(), b.vqps()  # the clients' connections are open before the baseline
        before = {p.name: p.held() for p in (pa, pb)}
        pids = {p.name: p.proc.pid for p in (pa, pb)}
        yield pa, pb, a, b, request.param
        gc.collect()  # buffers and sessions the test dropped
        # VQPs left behind, looked for before close() ends the Agents' leases (which would give
        # them back whatever the test did).
        for agent, process in ((a, pa), (b, pb)):
            if process.proc.poll() is None:
                assert agent.vqps() == [], f"{process.name} still holds VQPs"
        a.close()  # the registration sessions of alloc'd memfds: their regions go with them
        b.close()
        for agent, process in ((a, pa), (b, pb)):
            if process.proc.poll() is None:
                deadline = time.time() + 10  # a region goes once nothing of it is in flight
                while agent.regions() and time.time() < deadline:
                    time.sleep(0.05)
                assert agent.regions() == [], f"{process.name} still holds regions"
                if process.proc.pid != pids[process.name]:
                    continue  # restarted by the test: nothing to compare with
                deadline = time.time() + 10
                while process.held() > before[process.name] and time.time() < deadline:
                    time.sleep(0.05)
                fds, threads = process.held()
                assert fds <= before[process.name][0], f"{process.name}: descriptors {before[process.name][0]} -> {fds}"
                assert threads <= before[process.name][1], f"{process.name}: threads {before[process.name][1]} -> {threads}"
    finally:
        pa.close()
        pb.close()

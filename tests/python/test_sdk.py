"""The Python SDK against two real agents, on both paths (the fixture `agents`): bytes verified
with numpy through futures, asyncio and batches; notifications as an iterator and an async
iterator; a deadline with a stopped peer; refusals as BraidError; an agent restart mid-session.
Nothing is left on the agents after each test (the fixture checks)."""

import asyncio
import gc
import mmap
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import braid
from conftest import MiB, mib_pair, pattern


def test_write_and_read_move_the_bytes_of_numpy_views(agents):
    _, _, a, b, path = agents
    with braid.connect(a, b, qps=4) as conn:
        src = a.alloc(16 * MiB, label="src")
        dst = b.alloc(16 * MiB, label="dst", grant=[conn.vqp_b])
        back = a.alloc(16 * MiB, label="back")
        src_view = np.frombuffer(src, dtype=np.uint8)
        src_view[:] = pattern(16 * MiB, 1)  # written through the view: no copy into the region
        with conn.session() as s:
            assert s.path == path
            remote = dst.remote(conn.vqp_b)
            futures = [s.write(src, remote, length=MiB, local_offset=i * MiB,
                               remote_offset=i * MiB) for i in range(16)]
            results = [f.result(timeout=30) for f in futures]
            assert all(r.nbytes == MiB and r.wc_status == "success" for r in results)
            assert np.array_equal(np.frombuffer(dst, dtype=np.uint8), src_view)
            s.read(back, remote).result(timeout=30)
            assert np.array_equal(np.frombuffer(back, dtype=np.uint8), src_view)


def test_an_asyncio_gather_of_a_thousand_writes(agents):
    _, _, a, b, _ = agents
    with braid.connect(a, b, qps=4) as conn:
        src = a.alloc(4 * MiB)
        dst = b.alloc(4 * MiB, grant=[conn.vqp_b])
        np.frombuffer(src, dtype=np.uint8)[:] = pattern(4 * MiB, 2)
        remote = dst.remote(conn.vqp_b)
        with conn.session() as s:
            async def main():
                ops = [s.write(src, remote, length=4096, local_offset=(i % 1024) * 4096,
                               remote_offset=(i % 1024) * 4096) for i in range(1000)]
                return await asyncio.gather(*ops)

            results = asyncio.run(main())
        assert len(results) == 1000
        assert all(r.nbytes == 4096 for r in results)
        n = 1000 * 4096
        assert np.array_equal(np.frombuffer(dst, dtype=np.uint8)[:n],
                              np.frombuffer(src, dtype=np.uint8)[:n])


def test_a_batch_completes_each_operation_once_and_a_refused_one_fails_alone(agents):
    _, _, a, b, _ = agents
    with braid.connect(a, b, qps=4) as conn:
        src = a.alloc(8 * MiB)
        dst = b.alloc(8 * MiB, grant=[conn.vqp_b])
        np.frombuffer(src, dtype=np.uint8)[:] = pattern(8 * MiB, 3)
        remote = dst.remote(conn.vqp_b)
        ops = [braid.Op("write", src, remote, 4096, i * 4096, i * 4096) for i in range(2048)]
        beyond = braid.Op("write", src, remote, 4096, 0, 8 * MiB)  # past the peer's region
        with conn.session() as s:
            futures = s.submit_batch(ops[:1000] + [beyond] + ops[1000:])
            refused = futures[1000]
            assert all(f.result(timeout=60).nbytes == 4096 for f in futures[:1000] + futures[1001:])
            with pytest.raises(braid.BraidError) as e:
                refused.result(timeout=30)
            assert e.value.code_name == "OutOfRange", e.value
        assert np.array_equal(np.frombuffer(dst, dtype=np.uint8),
                              np.frombuffer(src, dtype=np.uint8))


def test_notifications_arrive_in_order_to_an_iterator_and_an_async_iterator(agents):
    _, _, a, b, path = agents
    with braid.connect(a, b, qps=4, scheme="dqplb") as conn:
        src = a.alloc(MiB)
        dst = b.alloc(MiB, grant=[conn.vqp_b])
        remote = dst.remote(conn.vqp_b)
        with b.notifications(conn.vqp_b) as notes, b.notifications(conn.vqp_b) as async_notes:
            assert notes.path == path
            with conn.session() as s:
                for f in [s.write(src, remote, length=64, imm=100 + i) for i in range(50)]:
                    f.result(timeout=30)
            heard = [next(notes) for _ in range(50)]
            assert [n.imm for n in heard] == [100 + i for i in range(50)]
            assert [n.seq for n in heard] == list(range(50))
            assert all(n.byte_len == 64 and n.wc_status == "success" for n in heard)

            async def first(k):
                out = []
                async for n in async_notes:
                    out.append(n.imm)
                    if len(out) == k:
                        break
                return out

            assert asyncio.run(first(50)) == [100 + i for i in range(50)]
            assert notes.next(timeout=0.05) is None


def test_a_deadline_ends_a_write_the_stopped_peer_cannot_finish(agents):
    _, pb, a, b, _ = agents
    with braid.connect(a, b, qps=2) as conn:
        src = a.alloc(MiB)
        dst = b.alloc(MiB, grant=[conn.vqp_b])
        with conn.session() as s:
            pb.stop()  # the peer acknowledges nothing
            try:
                t0 = time.monotonic()
                with pytest.raises(braid.BraidError) as e:
                    s.write(src, dst.remote(conn.vqp_b), deadline=0.3).result(timeout=10)
                waited = time.monotonic() - t0
            finally:
                pb.proc.send_signal(signal.SIGCONT)
            assert e.value.code_name == "DeadlineExceeded", e.value
            assert 0.29 <= waited < 2.0


def test_refusals_are_braid_errors_that_say_what_is_wrong(agents):
    _, _, a, b, _ = agents
    with braid.connect(a, b, qps=2) as conn:
        src = a.alloc(MiB)
        dst = b.alloc(MiB, grant=[conn.vqp_b])
        with pytest.raises(braid.BraidError) as e:
            a.session(conn.vqp_a + 1000)  # no such VQP: refused when opened
        assert e.value.code_name == "NotFound", e.value
        assert f"virtual QP {conn.vqp_a + 1000}" in e.value.message, e.value
        remote = dst.remote(conn.vqp_b)
        s = conn.session()
        # A deadline past what the agent takes is refused on both paths, never shortened.
        with pytest.raises(braid.BraidError) as e:
            s.write(src, remote, length=64, deadline=25 * 3600).result(timeout=30)
        assert e.value.code_name == "InvalidArgument" and "24 hours" in e.value.message, e.value
        # Timeouts that are no number of seconds are a ValueError, raised before anything is sent
        # (NaN and infinities once reached C++ as undefined conversions).
        for bad in (-1.0, float("nan"), float("inf")):
            with pytest.raises(ValueError):
                s.write(src, remote, length=64, deadline=bad)
            with pytest.raises(ValueError):
                s.flush(bad)
        # Fields no operation can carry are named before anything is sent.
        for kwargs, field in (({"length": -1}, "length"), ({"local_offset": -5}, "local_offset"),
                              ({"remote_offset": 1 << 64}, "remote_offset"),
                              ({"imm": 1 << 33}, "imm")):
            with pytest.raises(ValueError, match=field):
                s.write(src, remote, **{"length": 64, **kwargs})
        # With no length, an offset at or past the buffer's end leaves nothing to move; it said
        # "length must be from 0 to ..., not -9223372036853727232".
        for offset in (src.nbytes, 1 << 63):
            with pytest.raises(ValueError, match=f"local_offset {offset} is at or past the end"):
                s.write(src, remote, local_offset=offset)
        with pytest.raises(TypeError, match="registered with this session's agent"):
            s.write(np.zeros(64, dtype=np.uint8), remote, length=64)
        assert s.write(src, remote, length=64).result(timeout=30).nbytes == 64
        s.close()
        for after_close in (s.flush, s.cancel, lambda: s.write(src, remote, length=64)):
            with pytest.raises(ValueError, match="closed"):  # once a crash: raised without the GIL
                after_close()
        del src, dst
    with pytest.raises(braid.BraidError) as e:
        a.register(bytearray(4096))  # heap memory: the agent cannot map it
    assert "cannot map" in e.value.message, e.value
    fd = os.memfd_create("py-private")
    os.ftruncate(fd, 4096)
    private = mmap.mmap(fd, 4096, flags=mmap.MAP_PRIVATE)
    os.close(fd)
    with pytest.raises(braid.BraidError) as e:
        a.register(np.frombuffer(private, dtype=np.uint8))  # copy-on-write: the agent's differs
    assert "private mapping" in e.value.message, e.value
    with pytest.raises(braid.BraidError) as e:
        a.register(object())
    assert "exposes no buffer" in e.value.message
    with pytest.raises(ValueError):
        braid.connect(a, b, scheme="zigzag")


def test_an_agent_restart_mid_session_is_a_clear_error_and_connect_works_after(agents):
    pa, _, a, b, path = agents
    conn = braid.connect(a, b, qps=2)
    src = a.alloc(MiB)
    dst = b.alloc(MiB, grant=[conn.vqp_b])
    s = conn.session()
    s.write(src, dst.remote(conn.vqp_b)).result(timeout=30)
    pa.kill()
    t0 = time.monotonic()
    with pytest.raises(braid.BraidError) as e:
        s.write(src, dst.remote(conn.vqp_b), deadline=1.0).result(timeout=15)
    assert time.monotonic() - t0 < 10
    assert e.value.code_name in ("IoError", "Unavailable", "DeadlineExceeded", "Cancelled"), e.value
    s.close()
    conn.release()  # agent A's VQP went with it; B's is destroyed here
    b.destroy_vqp(conn.vqp_b)
    del src  # before the restart: a new agent may give its id to another region
    pa.start()
    a2 = braid.Agent(a.address)
    with braid.connect(a2, b, qps=2) as conn2:
        src2 = a2.alloc(MiB)
        with conn2.session() as s2:
            assert s2.path == path
            s2.write(src2, dst.grant(conn2.vqp_b)).result(timeout=30)
        del src2
    del dst


def test_events_and_the_generated_control_stub_see_a_connection_come_and_go(agents):
    from braid.v1 import agent_pb2

    _, _, a, b, _ = agents
    with a.events() as events:
        conn = braid.connect(a, b, qps=2)
        vqp = conn.vqp_a
        info = a.control.GetVirtualQp(agent_pb2.GetVirtualQpRequest(vqp_id=vqp), timeout=10)
        assert info.connected and info.num_qps == 2
        agent = a.control.GetInfo(agent_pb2.GetInfoRequest(), timeout=10)
        assert agent.version == braid.__version__ and braid.__version__.count(".") == 2
        assert a.serving() and a.serving("liveness")
        with pytest.raises(braid.BraidError, match="(?i)not.?found"):
            a.serving("no-such-service")
        conn.close()
        kinds = []
        for e in events:
            if e.vqp_id == vqp:
                kinds.append(e.kind)
            if e.kind == "vqp_destroyed" and e.vqp_id == vqp:
                break
        assert kinds[0] == "vqp_connected", kinds
        assert kinds[-1] == "vqp_destroyed", kinds
    a.close()  # the control channel: the agent's descriptor for it goes too


EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples" / "python"


def run_example(name, *args):
    return subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True,
                          text=True, timeout=300, env=dict(os.environ))


def test_the_examples_run_against_real_agents(agents):
    pa, pb, _, _, path = agents
    a = "unix:" + pa.unix if path == "ring" else pa.tcp
    b = "unix:" + pb.unix if path == "ring" else pb.tcp
    orchestrated = run_example("orchestrator.py", "--qps", "2", a, b)
    assert orchestrated.returncode == 0, orchestrated.stdout + orchestrated.stderr
    assert "1 pairs: all healthy" in orchestrated.stdout
    kv = run_example("kv_cache_transfer.py", "--blocks", "64", a, b)
    assert kv.returncode == 0, kv.stdout + kv.stderr
    assert "64 blocks" in kv.stdout and "0 differ, 0 missing" in kv.stdout, kv.stdout


def test_cancel_returns_only_when_no_more_bytes_reach_the_buffers(agents):
    _, _, a, b, _ = agents
    with braid.connect(a, b, qps=4) as conn:
        local = a.alloc(64 * MiB)
        peer = b.alloc(64 * MiB, grant=[conn.vqp_b])
        np.frombuffer(peer, dtype=np.uint8)[:] = 0x11
        remote = peer.remote(conn.vqp_b)
        view = np.frombuffer(local, dtype=np.uint8)
        for round_ in range(3):
            s = conn.session()
            # READs land in `local`: the agent's DMA into it, 512 MiB under way.
            futures = [s.read(local, remote, MiB, (i % 64) * MiB, (i % 64) * MiB)
                       for i in range(512)]
            time.sleep(0.02 * round_)
            s.cancel()
            view[:] = 0xAB  # the canary: nothing may overwrite it now
            time.sleep(0.3)
            assert int(np.count_nonzero(view != 0xAB)) == 0, f"round {round_}: bytes after cancel"
            outcomes = set()
            for f in futures:
                e = f.exception(timeout=30)
                outcomes.add("ok" if e is None else e.code_name)
            assert outcomes <= {"ok", "Cancelled"}, outcomes
            with pytest.raises(braid.BraidError) as e:
                s.read(local, remote, MiB).result(timeout=10)
            assert e.value.code_name == "Cancelled"
            s.close()
        del local, peer, view


def memfd_array(nbytes: int, name: str):
    fd = os.memfd_create(name, os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, nbytes)
    m = mmap.mmap(fd, nbytes)
    os.close(fd)
    return np.frombuffer(m, dtype=np.uint8)


def dev_shm_array(nbytes: int, path: str):
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    os.ftruncate(fd, nbytes)
    m = mmap.mmap(fd, nbytes)
    os.close(fd)
    return np.frombuffer(m, dtype=np.uint8)


def test_a_numpy_array_over_a_memfd_or_a_dev_shm_file_is_registered_where_it_lies(agents):
    _, _, a, b, path = agents
    with braid.connect(a, b, qps=4) as conn:
        src = memfd_array(8 * MiB, "py-src")
        src[:] = pattern(8 * MiB, 9)
        if path == "grpc":  # a TCP agent cannot map this process's memory
            with pytest.raises(braid.BraidError) as e:
                a.register(src)
            assert "Unix socket" in e.value.message, e.value
            return
        mine = a.register(src, label="py-memfd")
        assert mine.nbytes == 8 * MiB and mine.id in a.regions()
        dst = b.alloc(8 * MiB, grant=[conn.vqp_b])
        # A file in /dev/shm (no seals: the agent guards it against being cut short).
        shm_path = f"/dev/shm/braid-py-back-{os.getpid()}"
        back = dev_shm_array(8 * MiB, shm_path)
        try:
            back_reg = a.register(back)
        finally:
            os.unlink(shm_path)
        with conn.session() as s:
            s.write(mine, dst.remote(conn.vqp_b)).result(timeout=30)
            assert np.array_equal(np.frombuffer(dst, dtype=np.uint8), src)
            src[:4096] = 0x5A  # written in the array itself: the next write carries it (no copy)
            s.write(mine, dst.remote(conn.vqp_b), length=4096).result(timeout=30)
            assert np.all(np.frombuffer(dst, dtype=np.uint8)[:4096] == 0x5A)
            s.read(back_reg, dst.remote(conn.vqp_b)).result(timeout=30)
            assert np.array_equal(back, src)  # the agent wrote into this process's file
            # A slice that starts inside a page: only its bytes are registered and moved.
            part = a.register(src[100:100 + MiB])
            assert part.nbytes == MiB
            dst_view = np.frombuffer(dst, dtype=np.uint8)
            dst_view[:] = 0
            s.write(part, dst.remote(conn.vqp_b)).result(timeout=30)
            assert np.array_equal(dst_view[:MiB], src[100:100 + MiB])
            assert not dst_view[MiB:].any()
            part.close()
            del dst_view
        mine.close()
        back_reg.close()
        del dst
    a.close()  # its registration session: the agent's descriptors for it go too


def own_holdings():
    """(descriptors, SDK threads) of this Python process: the SDK names its threads "braid-...";
    gRPC's own pools grow on demand and keep their threads, which is no per-session leak."""
    threads = 0
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/comm") as f:
                threads += f.read().startswith("braid-")
        except OSError:
            pass  # the thread ended meanwhile
    return len(os.listdir("/proc/self/fd")), threads


def test_hundreds_of_sessions_leave_nothing_behind_in_this_process_or_the_agents(agents):
    """Sessions opened and closed one after another, a third of them closed with writes still in
    flight, a third with a notification stream beside them: every write's future ends (done or a
    BraidError, never left hanging), the bytes of those waited for are verified, and this process
    holds the descriptors and SDK threads it held before (the fixture checks the agents)."""
    _, _, a, b, _ = agents
    with braid.connect(a, b, qps=2) as conn:
        src, dst, src_view, dst_view, remote = mib_pair(a, b, conn)

        def cycle(i):
            slot = (i % 256) * 4096
            src_view[slot:slot + 4096] = i % 251
            left = []
            with conn.session(ring_entries=64) as s:
                if i % 3 == 2:
                    with b.notifications(conn.vqp_b) as n:
                        s.submit(braid.Op("write_with_imm", src, remote, length=4096,
                                          local_offset=slot, remote_offset=slot,
                                          imm=i)).result(timeout=30)
                        seen = n.next(timeout=30)
                        assert seen is not None and seen.imm == i, seen
                else:
                    s.write(src, remote, length=4096, local_offset=slot,
                            remote_offset=slot).result(timeout=30)
                assert np.array_equal(dst_view[slot:slot + 4096], src_view[slot:slot + 4096]), i
                if i % 3 == 1:  # closed with these still in flight
                    left = [s.write(src, remote, length=4096, local_offset=k * 4096,
                                    remote_offset=k * 4096) for k in range(16)]
            for f in left:
                try:
                    f.result(timeout=30)
                except braid.BraidError:
                    pass  # ended by the close: an error, not a hang

        for i in range(12):  # threads and connections opened once, on first use
            cycle(i)
        gc.collect()
        before = own_holdings()
        for i in range(300):
            cycle(i)
        gc.collect()
        deadline = time.time() + 10
        while own_holdings() > before and time.time() < deadline:
            time.sleep(0.05)
        assert own_holdings() <= before, f"this process: {before} -> {own_holdings()}"
        del src_view, dst_view


def test_a_forked_child_is_refused_at_once_and_its_parent_keeps_working(agents):
    """A child made by fork() (Python multiprocessing's default on Linux) inherits the parent's
    agent connections, sessions and streams but not their threads, and shares their sockets: every
    use there fails at once with FailedPrecondition (a new Agent too, since gRPC's state came
    along), closing them waits for nothing, and the parent's connection, session and notification
    stream keep working after the child is gone."""
    _, _, a, b, path = agents
    with braid.connect(a, b, qps=2) as conn:
        src, dst, src_view, dst_view, remote = mib_pair(a, b, conn)
        with conn.session() as s, b.notifications(conn.vqp_b) as notes:
            s.write(src, remote, length=4096).result(timeout=30)
            readable, writable = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child: report each outcome, then leave without Python's cleanup
                os.close(readable)
                report = []

                def outcome(name, call):
                    start = time.time()
                    try:
                        call()
                        result = "returned"
                    except braid.BraidError as e:
                        result = e.code_name if "fork()" in str(e) else f"other: {e}"
                    except BaseException as e:  # noqa: BLE001 (reported to the parent)
                        result = f"{type(e).__name__}: {e}"
                    report.append(f"{name}={result}{'' if time.time() - start < 5 else ' (slow)'}")

                outcome("new agent", lambda: braid.Agent(a.address))
                outcome("call", a.vqps)
                outcome("write", lambda: s.write(src, remote, length=4096).result(timeout=10))
                outcome("notification", lambda: next(notes))
                outcome("close session", s.close)
                outcome("close stream", notes.close)
                outcome("close connection", conn.close)
                os.write(writable, ";".join(report).encode())
                os._exit(0)
            os.close(writable)
            deadline = time.time() + 60
            while os.waitpid(pid, os.WNOHANG) == (0, 0):
                if time.time() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    pytest.fail("the forked child hung")
                time.sleep(0.05)
            with os.fdopen(readable, "rb") as r:
                report = r.read().decode()
            refused = "=FailedPrecondition"
            assert report == ";".join([
                f"new agent{refused}", f"call{refused}", f"write{refused}",
                f"notification{refused}", "close session=returned", "close stream=returned",
                "close connection=returned"]), report
            # The parent's connection, session and stream are intact.
            src_view[:] = pattern(MiB, 7)
            s.write(src, remote, length=MiB, imm=5).result(timeout=30)
            assert np.array_equal(dst_view, src_view)
            note = notes.next(timeout=30)
            assert note is not None and note.imm == 5, note
            assert [v["vqp_id"] for v in a.vqps()] == [conn.vqp_a]
        del src_view, dst_view


# A client process: connects the two agents (``hold`` as given), registers a buffer on each side,
# says "ready" and then writes without pause until it is killed.

"""The Python SDK's rates, next to the C++ SDK's (bench/sdk_bench.cc) on the same agents
(bench/python_sdk.sh runs both): 1 MiB WRITEs pipelined through futures (the window kept full),
and 4 KiB WRITEs submitted with submit_batch, 1,024 per batch.
Usage: python3 python_sdk_bench.py AGENT_A AGENT_B
Prints: "python 1MiB_write_gbs X" and "python 4KiB_batch_mops Y"."""

import collections
import sys
import time

import braid

MiB = 1 << 20
REGION = 256 * MiB


def main() -> int:
    a, b = braid.Agent(sys.argv[1]), braid.Agent(sys.argv[2])
    with braid.connect(a, b, qps=8) as conn:
        src = a.alloc(REGION, label="py-bench-src")
        dst = b.alloc(REGION, label="py-bench-dst", grant=[conn.vqp_b])
        remote = dst.remote(conn.vqp_b)
        with conn.session() as s:
            slots = REGION // MiB
            inflight = collections.deque()
            t0 = time.perf_counter()
            for i in range(2048):
                off = (i % slots) * MiB
                inflight.append(s.write(src, remote, MiB, off, off))
                while len(inflight) >= s.window:
                    inflight.popleft().result()
            for f in inflight:
                f.result()
            big = time.perf_counter() - t0

            slots = REGION // 4096
            futures = []
            t0 = time.perf_counter()
            for k in range(200):
                ops = [braid.Op("write", src, remote, 4096, ((k * 1024 + i) % slots) * 4096,
                                ((k * 1024 + i) % slots) * 4096) for i in range(1024)]
                for f in futures:
                    f.result()
                futures = s.submit_batch(ops)
            for f in futures:
                f.result()
            small = time.perf_counter() - t0
            print(f"python 1MiB_write_gbs {2048 * MiB / big / 1e9:.3f}")
            print(f"python 4KiB_batch_mops {200 * 1024 / small / 1e6:.4f}")
            print(f"python path {s.path}")
        del src, dst
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A KV-cache style transfer: many blocks of 64 KiB to 4 MiB written from one agent's pool into
another's, each a write with immediate (the block's index), the receiver learning from the
notifications which blocks have landed and checking each one's bytes.

    python3 kv_cache_transfer.py [--blocks 256] [--seed 1] SENDER RECEIVER

Prints blocks, bytes and GB/s; exits 1 when a block is missing or differs."""

import argparse
import asyncio
import sys
import time

import numpy as np

import braid

KiB, MiB = 1 << 10, 1 << 20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sender")
    parser.add_argument("receiver")
    parser.add_argument("--blocks", type=int, default=256)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    sizes = [int(s) * 64 * KiB for s in rng.integers(1, 65, args.blocks)]  # 64 KiB to 4 MiB
    offsets = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.int64)
    total = int(sum(sizes))

    sender, receiver = braid.Agent(args.sender), braid.Agent(args.receiver)
    with braid.connect(sender, receiver, qps=8, scheme="dqplb") as conn:
        pool = sender.alloc(total, label="kv-pool")
        landing = receiver.alloc(total, label="kv-landing", grant=[conn.vqp_b])
        np.frombuffer(pool, dtype=np.uint8)[:] = rng.integers(0, 256, total, dtype=np.uint8)
        remote = landing.remote(conn.vqp_b)
        with receiver.notifications(conn.vqp_b) as arrivals, conn.session() as s:
            async def send() -> None:
                ops = [s.write(pool, remote, size, int(off), int(off), imm=i, deadline=30)
                       for i, (size, off) in enumerate(zip(sizes, offsets))]
                await asyncio.gather(*ops)

            async def receive() -> list:
                landed = []
                async for n in arrivals:
                    landed.append(n.imm)
                    if len(landed) == args.blocks:
                        break
                return landed

            async def both() -> list:
                _, landed = await asyncio.gather(send(), receive())
                return landed

            t0 = time.perf_counter()
            landed = asyncio.run(both())
            seconds = time.perf_counter() - t0
        src, dst = np.frombuffer(pool, dtype=np.uint8), np.frombuffer(landing, dtype=np.uint8)
        bad = [i for i in landed
               if not np.array_equal(src[offsets[i]:offsets[i] + sizes[i]],
                                     dst[offsets[i]:offsets[i] + sizes[i]])]
        missing = set(range(args.blocks)) - set(landed)
        print(f"{len(landed)} blocks, {total / MiB:.1f} MiB in {seconds:.3f} s: "
              f"{total / seconds / 1e9:.3f} GB/s; {len(bad)} differ, {len(missing)} missing")
        del src, dst, pool, landing
    return 0 if not bad and not missing else 1


if __name__ == "__main__":
    sys.exit(main())

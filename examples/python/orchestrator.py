"""Connects N braid agents pairwise and reports the health of every pair.

    python3 orchestrator.py [--qps 4] ADDRESS ADDRESS [ADDRESS ...]

For each pair: a virtual QP on both agents, connected; a 1 MiB write to check that it moves
bytes; then one line per pair with its healthy data QPs. Exits 1 when a pair is unhealthy.
Everything it created is destroyed on exit."""

import argparse
import itertools
import sys

import numpy as np

import braid


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("agents", nargs="+", help='"host:port" or "unix:/path"')
    parser.add_argument("--qps", type=int, default=4)
    args = parser.parse_args()
    if len(args.agents) < 2:
        parser.error("give at least two agents")
    agents = [braid.Agent(address) for address in args.agents]
    for agent in agents:
        info = agent.info()
        print(f"agent {info['agent_id']:<12} {agent.address:<40} provider {info['provider']}")
    healthy = True
    connections = []
    try:
        for (i, a), (j, b) in itertools.combinations(enumerate(agents), 2):
            conn = braid.connect(a, b, qps=args.qps)
            connections.append(conn)
            src = a.alloc(1 << 20)
            dst = b.alloc(1 << 20, grant=[conn.vqp_b])
            np.frombuffer(src, dtype=np.uint8)[:] = (i * 31 + j) % 251
            with conn.session() as s:
                s.write(src, dst.remote(conn.vqp_b), deadline=10).result(timeout=30)
            moved = np.array_equal(np.frombuffer(src, dtype=np.uint8),
                                   np.frombuffer(dst, dtype=np.uint8))
            vqp = next(v for v in a.vqps() if v["vqp_id"] == conn.vqp_a)
            ok = moved and vqp["connected"] and vqp["healthy_data_qps"] == args.qps
            healthy &= ok
            print(f"pair {i}-{j}: VQP {conn.vqp_a}<->{conn.vqp_b}, "
                  f"{vqp['healthy_data_qps']}/{args.qps} data QPs healthy, "
                  f"1 MiB {'verified' if moved else 'DIFFERS'}: {'healthy' if ok else 'UNHEALTHY'}")
            del src, dst
    finally:
        for conn in connections:
            conn.close()
    print(f"{len(connections)} pairs: {'all healthy' if healthy else 'NOT all healthy'}")
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())

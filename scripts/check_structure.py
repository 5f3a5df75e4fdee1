#!/usr/bin/env python3
"""Prints the structural figures of dataplane/: the longest files of vqp/ and engine/, the data
members of their largest classes, `scheme ==` tests outside creation code, the include cycles,
and which folders each folder's sources include. Run from the repository root."""
import os
import re
import sys

ROOT = "dataplane"


def sources():
    for root, _, files in os.walk(ROOT):
        for f in sorted(files):
            if f.endswith((".h", ".cc")):
                yield os.path.join(root, f)


def longest(folder, n=3):
    files = [p for p in sources() if p.startswith(os.path.join(ROOT, folder) + "/")]
    sized = sorted(((sum(1 for _ in open(p)), p) for p in files), reverse=True)
    return sized[:n]


def members(header, cls):
    text = open(header).read()
    start = text.index("class " + cls + " ")
    depth, i, body = 0, text.index("{", start), []
    for j in range(i, len(text)):
        c = text[j]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                break
        if depth == 1 and c not in "{}":
            body.append(c)
    lines = "".join(body).split("\n")
    return sum(1 for line in lines
               if re.match(r"^  [A-Za-z].*\b[a-z_0-9]+_( =.*)?;", line))


def include_graph():
    graph = {p: re.findall(r'#include "(dataplane/[^"]+)"', open(p).read()) for p in sources()}
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = 1
        stack.append(node)
        for nxt in graph.get(node, []):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [])
    folders = {}
    for p, incs in graph.items():
        a = p.split("/")[1]
        for inc in incs:
            b = inc.split("/")[1]
            if a != b:
                folders.setdefault(a, set()).add(b)
    return cycles, folders


def main():
    for folder in ("vqp", "engine"):
        for lines, path in longest(folder):
            print(f"{lines:5d} lines  {path}")
    print("data members: VirtualQp", members("dataplane/vqp/virtual_qp.h", "VirtualQp"),
          "Engine", members("dataplane/engine/engine.h", "Engine"))
    branches = [f"{p}:{n}" for p in sources() if p.startswith("dataplane/vqp/")
                or p.startswith("dataplane/engine/")
                for n, line in enumerate(open(p), 1) if re.search(r"scheme\s*[=!]=", line)]
    print("scheme tests:", ", ".join(branches) or "none")
    cycles, folders = include_graph()
    print("include cycles:", cycles or "none")
    for a in sorted(folders):
        print(f"  {a} includes {', '.join(sorted(folders[a]))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

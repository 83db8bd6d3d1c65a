"""Refuses ONNX models whose dataflow cannot be ordered: a cycle among a graph's nodes, a tensor produced
twice, or a local function that calls itself (directly or through others).

ONNX requires every graph to be a DAG and functions not to recurse; ONNX-GraphSurgeon and ONNX Runtime
would otherwise fail with their own exceptions deep inside the import. :func:`check_acyclic` runs on the
loaded model first and raises a :class:`~rnnrt.errors.ModelImportError` naming a node on the cycle (or the
call chain) instead.
"""

from __future__ import annotations

from typing import Iterable

import onnx

from rnnrt.errors import ModelImportError, fmt

__all__ = ["check_acyclic"]


def check_acyclic(model: onnx.ModelProto, where: str) -> None:
    """Raises ModelImportError if a graph (or subgraph, or local function body) of ``model`` has a cycle
    or a tensor with two producers, or if local functions call each other in a cycle."""
    _check_graph(model.graph, f"Model {where!r}", set())
    for func in model.functions:
        _check_nodes(func.node, set(func.input), f"Model {where!r} function {func.domain}.{func.name}")
    _check_calls(model.functions, where)


def _check_graph(graph: onnx.GraphProto, subject: str, outer: set) -> None:
    given = {i.name for i in graph.input} | {t.name for t in graph.initializer} | \
        {t.values.name for t in graph.sparse_initializer}
    _check_nodes(graph.node, given, subject)
    for node in graph.node:
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                _check_graph(sub, f"{subject} node {node.name or node.op_type!r} subgraph {attr.name!r}", outer)


def _check_nodes(nodes: Iterable[onnx.NodeProto], given: set, subject: str) -> None:
    """Kahn's algorithm over the nodes; names not produced here (inputs, outer scope) are no edges."""
    nodes = list(nodes)
    producer: dict[str, int] = {}
    for i, node in enumerate(nodes):
        for out in node.output:
            if not out:
                continue
            if out in producer or out in given:
                first = "a graph input or initializer" if out in given else _label(nodes[producer[out]])
                raise ModelImportError(fmt(f"{subject} node {_label(node)}",
                                           f"Produces tensor {out!r}, which {first} already provides",
                                           "Every tensor of an ONNX graph has one producer; rename one of them."))
            producer[out] = i
    preds = [{producer[x] for x in node.input if x in producer} for node in nodes]
    succs: list[list[int]] = [[] for _ in nodes]
    for i, ps in enumerate(preds):
        for p in ps:
            succs[p].append(i)
    waiting = [len(ps) for ps in preds]
    ready = [i for i, n in enumerate(waiting) if n == 0]
    done = 0
    while ready:
        i = ready.pop()
        done += 1
        for j in succs[i]:
            waiting[j] -= 1
            if waiting[j] == 0:
                ready.append(j)
    if done == len(nodes):
        return
    # Walk back from a node that never became ready until a node repeats: that loop is a cycle.
    node = next(i for i, n in enumerate(waiting) if n > 0)
    seen: dict[int, int] = {}
    path: list[int] = []
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = next(p for p in preds[node] if waiting[p] > 0)
    cycle = list(reversed(path[seen[node]:]))
    chain = " -> ".join(_label(nodes[i]) for i in cycle + cycle[:1])
    raise ModelImportError(fmt(f"{subject} node {_label(nodes[cycle[0]])}", f"Is on a cycle: {chain}",
                               "An ONNX graph must be acyclic; carry state through graph inputs and outputs "
                               "(rnnrt pairs them) instead of feeding a node its own output."))


def _check_calls(functions: Iterable[onnx.FunctionProto], where: str) -> None:
    funcs = {(f.domain, f.name): f for f in functions}
    calls = {key: sorted({(n.domain, n.op_type) for n in f.node if (n.domain, n.op_type) in funcs})
             for key, f in funcs.items()}
    state: dict[tuple, int] = {}  # 1: on the current call path, 2: finished

    for root in funcs:
        if root in state:
            continue
        stack = [(root, iter(calls[root]))]
        path = [root]
        state[root] = 1
        while stack:
            key, it = stack[-1]
            callee = next(it, None)
            if callee is None:
                stack.pop()
                path.pop()
                state[key] = 2
            elif state.get(callee) == 1:
                chain = " -> ".join(f"{d}.{n}" for d, n in path[path.index(callee):] + [callee])
                raise ModelImportError(fmt(f"Model {where!r} function {callee[0]}.{callee[1]}",
                                           f"Calls itself: {chain}",
                                           "ONNX local functions must not recurse; unroll the recursion."))
            elif callee not in state:
                state[callee] = 1
                path.append(callee)
                stack.append((callee, iter(calls[callee])))


def _label(node: onnx.NodeProto) -> str:
    return f"{node.name!r} ({node.op_type})" if node.name else f"({node.op_type} -> {list(node.output)[:2]})"

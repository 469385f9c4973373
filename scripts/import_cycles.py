"""Fails (exit 1) when modules import each other, directly or through a loop.

import-linter's contracts keep the layers apart; this keeps any two modules of the same
layer from depending on each other, which no contract states: such a circle works only
while its imports stay inside functions (or TYPE_CHECKING blocks), and splits what is one
job over two modules. Imports inside functions and TYPE_CHECKING blocks count.

    .venv/bin/python -m scripts.import_cycles [package ...]   # default: app workers bench
"""

import sys

import grimp

PACKAGES = ("app", "workers", "bench")


def circles(packages: tuple[str, ...] = PACKAGES, cache_dir: str | None = None) -> list[list[str]]:
    """Each set of modules that reach one another through their imports (a strongly
    connected component of two or more), as one loop through them, sorted."""
    graph = grimp.build_graph(*packages, cache_dir=cache_dir)
    found = []
    for component in _components(graph):
        if len(component) > 1:
            found.append(_loop(graph, sorted(component)))
    return sorted(found)


def _components(graph: grimp.ImportGraph) -> list[set[str]]:
    """Tarjan's strongly connected components, without recursion (modules chain deeply)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[set[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            module, edges = work[-1]
            step = next(edges, None)
            if step is not None:
                if step not in index:
                    index[step] = low[step] = len(index)
                    stack.append(step)
                    on_stack.add(step)
                    work.append((step, iter(sorted(graph.find_modules_directly_imported_by(step)))))
                elif step in on_stack:
                    low[module] = min(low[module], index[step])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[module])
            if low[module] == index[module]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == module:
                        break
                out.append(component)
    return out


def _loop(graph: grimp.ImportGraph, component: list[str]) -> list[str]:
    """One import loop through the component's first module: first -> ... -> first."""
    first = component[0]
    inside = set(component)
    for imported in sorted(graph.find_modules_directly_imported_by(first) & inside):
        back = graph.find_shortest_chain(importer=imported, imported=first)
        if back is not None:
            return [first, *back]
    return component  # not reached: every module of a component lies on a loop


def main(argv: list[str]) -> int:
    found = circles(tuple(argv) or PACKAGES)
    for loop in found:
        print("import circle: " + " -> ".join(loop))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

#!/usr/bin/env python3
"""Fail if any module of a crate imports, directly or through others, a module that imports it back.

Each `.rs` file under a crate's `src/` is one module node (`a/b.rs` and `a/b/mod.rs` are `a::b`;
`lib.rs` is the root). An edge A → B is a path in A that names B or an item of B: `use
crate::x::y`, `use super::y`, or `crate::x::y::f(...)` written inline (test modules included).
A parent's `mod child;` declaration is not an edge; its `use child::Item` is. A path to an item
that a module re-exports (`pub use child::Item`) leads to the module that defines it, and `super`
inside an inline module (`mod tests { .. }`) means the file's own module.

    python3 tools/check_module_cycles.py [common datasets .]   # default: every workspace crate

Prints each crate's module count and edge count, and every cycle found; exits 1 if any.
Needs only the Python standard library.
"""

import os
import re
import sys

ROOT = os.environ.get("PHI_ZOO_ROOT", os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
DEFAULT_CRATES = ["common", "datasets", "phi1", "phi1_5", "phi2", "."]

PATH = re.compile(r"\b(crate|super|self)((?:::\w+)+)")
USE_GROUP = re.compile(r"\buse\s+(crate|super|self)((?:::\w+)*)::\{([^;]*)\};", re.S)


def modules(src):
    """Module path (tuple) → file, for every .rs file under src."""
    found = {}
    for dirpath, _, files in os.walk(src):
        for name in files:
            if not name.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, name), src)
            parts = rel[:-3].split(os.sep)
            if parts[-1] in ("mod", "lib", "main"):
                parts = parts[:-1]
            found[tuple(parts)] = os.path.join(dirpath, name)
    return found


def resolve(origin, base, names, known, reexports=None):
    """The module a path from `origin` names: the longest known module prefix, following
    re-exports of the item after it."""
    if base == "crate":
        path = []
    elif base == "super":
        path = list(origin[:-1])
    else:
        path = list(origin)
    rest = list(names)
    while rest and rest[0] == "super":
        path = path[:-1]
        rest = rest[1:]
    full = path + rest
    for cut in range(len(full), -1, -1):
        module = tuple(full[:cut])
        if module in known:
            if reexports and cut < len(full) and full[cut] in reexports.get(module, {}):
                return reexports[module][full[cut]]
            return module
    return None


def reexports_of(known):
    """Module → {item name → the module that defines it}, from `pub use` lines."""
    table = {}
    for module, path in known.items():
        with open(path, encoding="utf-8") as f:
            text = re.sub(r"//[^\n]*", "", f.read())
        items = {}
        for line in re.findall(r"pub(?:\([^)]*\))?\s+use\s+([^;]+);", text):
            line = " ".join(line.split())
            head, _, group = line.partition("::{")
            names = [n.strip().split(" as ")[-1].strip() for n in group.rstrip("}").split(",")] if group else [line.rsplit("::", 1)[-1]]
            head = head if group else line.rsplit("::", 1)[0]
            parts = head.split("::")
            base = parts[0] if parts[0] in ("crate", "super", "self") else "self"
            rest = parts[1:] if parts[0] in ("crate", "super", "self") else parts
            target = resolve(module, base, rest, known)
            if target is not None and target != module:
                for name in names:
                    if name:
                        items[name] = target
        table[module] = items
    return table


def edges_of(origin, text, known, reexports=None):
    text = re.sub(r"//[^\n]*", "", text)
    inline = re.search(r"\bmod\s+\w+\s*\{", text)
    if inline:
        # Inside an inline module, `super` is this file's module.
        text = text[: inline.end()] + re.sub(r"\bsuper::", "self::", text[inline.end():])
    targets = set()
    for base, head, group in USE_GROUP.findall(text):
        head_parts = [p for p in head.split("::") if p]
        for item in re.split(r",", group):
            item = item.strip().split(" as ")[0].strip()
            if not item or item == "self":
                item_parts = []
            else:
                item_parts = [p for p in re.split(r"::|\{|\}", item) if p.strip()][:1]
            target = resolve(origin, base, head_parts + item_parts, known, reexports)
            if target is not None:
                targets.add(target)
    for base, rest in PATH.findall(text):
        target = resolve(origin, base, [p for p in rest.split("::") if p], known, reexports)
        if target is not None:
            targets.add(target)
    targets.discard(origin)
    # A parent naming its own child in `mod child;` is not an import; `use child::X` is,
    # and shows up as a `self::child` or bare path, handled below.
    for name in re.findall(r"^\s*(?:pub(?:\([^)]*\))?\s+)?use\s+(\w+)::", text, re.M):
        if name not in ("crate", "super", "self", "std", "core", "alloc"):
            child = origin + (name,)
            if child in known:
                targets.add(child)
    return targets


def cycles(graph):
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return found


def main():
    crates = sys.argv[1:] or DEFAULT_CRATES
    failed = False
    for crate in crates:
        src = os.path.join(ROOT, crate, "src")
        known = modules(src)
        reexports = reexports_of(known)
        graph = {}
        for module, path in known.items():
            with open(path, encoding="utf-8") as f:
                graph[module] = edges_of(module, f.read(), known, reexports)
        name = "phi-zoo" if crate == "." else crate
        edge_count = sum(len(t) for t in graph.values())
        found = cycles(graph)
        print(f"{name}: {len(known)} modules, {edge_count} imports, {len(found)} cycles")
        for component in found:
            failed = True
            print("  cycle among: " + ", ".join("::".join(m) or "(root)" for m in sorted(component)))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

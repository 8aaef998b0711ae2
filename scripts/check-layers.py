#!/usr/bin/env python3
"""Check the module graph of src/: no import cycles, and layers respected.

Usage: python3 scripts/check-layers.py [-v] [SRC_DIR]

SRC_DIR defaults to the src/ directory beside this script's scripts/.

Every .rs file under SRC_DIR is one module: src/lib.rs is `crate`, src/x.rs
and src/x/mod.rs are `x`, src/x/y.rs is `x::y`. A file depends on module M
when its code names a path into M:

  * `use crate::...` items, grouped ones included (`use crate::{a::B,
    c::{d, e}}`, over as many lines as they take);
  * paths anywhere in code: `crate::a::b::f(...)`, `super::x`,
    `self::x`, and paths that start with the name of a child module of the
    current module (`wake::Level` inside `nocb`, `cell::RcuCell` in lib.rs);
  * `super::` is resolved against the module the code is in, including
    inline modules (`super::*` in `mod tests {}` of src/x.rs is `x`).

Comments, doc comments, string and char literals are skipped; `mod x;`
declarations and `pub(in crate::x)` visibilities are not dependencies. The
target of a path is the longest prefix of it that is a module file:
`crate::nocb::wake::Level` is a dependency on `nocb::wake`, `crate::Rcu` one
on `crate`. Parent -> child and child -> parent edges count like any other.

The check fails (exit 1) when the file graph, self-edges left out, has a
cycle (each strongly connected component is printed with a cycle through
each of its edges), when a module is in no layer of LAYERS, or when a module
imports one from a higher layer. Otherwise it prints a summary and exits 0.
Standard library only (Python 3.11).
"""

from __future__ import annotations

import argparse
import sys
from collections import deque
from pathlib import Path

# Layers, top to bottom; each is a list of module-path prefixes ("nocb" places
# nocb and every nocb::...). A module may import modules of its own layer or
# of lower ones, never of a higher one; within a layer any direction is fine
# as long as there is no cycle. `crate` (lib.rs) is on top and may import
# anything. The longest matching prefix places a module.
LAYERS: list[list[str]] = [
    # The public layer: the crate root, the handle, the cell, the stats and
    # the model hooks.
    ["crate", "domain", "cell", "stats", "model"],
    ["nocb"],
    ["gp", "reader", "wait", "stall"],
    ["segcblist", "callback", "seq"],
    # The facade over std / loom / shuttle.
    ["sync"],
    # The model-only mutant enum, usable from every layer (the facade's
    # model backend included); it imports nothing of the crate.
    ["mutants"],
]

ROOT = "crate"


# ---------------------------------------------------------------- lexing


class Tok:
    __slots__ = ("text", "line")

    def __init__(self, text: str, line: int) -> None:
        self.text = text
        self.line = line

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"{self.text!r}@{self.line}"


def _is_ident_start(c: str) -> bool:
    return c == "_" or c.isalpha()


def _is_ident_char(c: str) -> bool:
    return c == "_" or c.isalnum()


def lex(src: str) -> list[Tok]:
    """Rust tokens that matter here: identifiers, `::`, and single-character
    punctuation. Comments, strings, chars and numbers are dropped."""
    toks: list[Tok] = []
    i, n, line = 0, len(src), 1

    def skip_quoted(j: int, quote: str) -> int:
        # j is just after the opening quote; returns the index after the
        # closing one. Backslash escapes the next character.
        nonlocal line
        while j < n:
            c = src[j]
            if c == "\\":
                if j + 1 < n and src[j + 1] == "\n":
                    line += 1
                j += 2
                continue
            if c == "\n":
                line += 1
            if c == quote:
                return j + 1
            j += 1
        return n

    def skip_raw(j: int) -> int:
        # j is at the first '#' or '"' after the r / br / cr prefix.
        nonlocal line
        hashes = 0
        while j < n and src[j] == "#":
            hashes += 1
            j += 1
        # src[j] == '"'
        j += 1
        close = '"' + "#" * hashes
        end = src.find(close, j)
        if end < 0:
            end = n
        line += src.count("\n", j, end)
        return min(n, end + len(close))

    while i < n:
        c = src[i]
        if c == "\n":
            line += 1
            i += 1
        elif c.isspace():
            i += 1
        elif src.startswith("//", i):
            j = src.find("\n", i)
            i = n if j < 0 else j
        elif src.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if src.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif src.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    if src[i] == "\n":
                        line += 1
                    i += 1
        elif c == '"':
            i = skip_quoted(i + 1, '"')
        elif c == "'":
            # A char literal ('x', '\n', '\u{1F600}') or a lifetime / label.
            if i + 1 < n and src[i + 1] == "\\":
                i = skip_quoted(i + 1, "'")
            elif i + 2 < n and src[i + 2] == "'":
                i += 3
            else:
                i += 1  # lifetime: the identifier after it is harmless
        elif _is_ident_start(c):
            j = i + 1
            while j < n and _is_ident_char(src[j]):
                j += 1
            word = src[i:j]
            nxt = src[j] if j < n else ""
            if word in ("r", "br", "cr") and (
                nxt == '"' or (nxt == "#" and j + 1 < n and src[j + 1] in '#"')
            ):
                i = skip_raw(j)
            elif word == "r" and nxt == "#" and j + 1 < n and _is_ident_start(src[j + 1]):
                # Raw identifier r#name.
                k = j + 1
                while k < n and _is_ident_char(src[k]):
                    k += 1
                toks.append(Tok(src[j + 1 : k], line))
                i = k
            elif word in ("b", "c") and nxt == '"':
                i = skip_quoted(j + 1, '"')
            elif word == "b" and nxt == "'":
                i = skip_quoted(j + 1, "'")
            else:
                toks.append(Tok(word, line))
                i = j
        elif c.isdigit():
            j = i + 1
            while j < n and _is_ident_char(src[j]):
                j += 1
            if j + 1 < n and src[j] == "." and src[j + 1].isdigit():
                j += 1
                while j < n and _is_ident_char(src[j]):
                    j += 1
            i = j
        elif src.startswith("::", i):
            toks.append(Tok("::", line))
            i += 2
        else:
            toks.append(Tok(c, line))
            i += 1
    return toks


# ------------------------------------------------------- module discovery


def module_of(path: Path, src_dir: Path) -> str:
    rel = path.relative_to(src_dir).with_suffix("")
    parts = list(rel.parts)
    if parts == ["lib"] or parts == ["main"]:
        return ROOT
    if parts[-1] == "mod":
        parts.pop()
    return "::".join(parts)


def segs_of(module: str) -> list[str]:
    return [] if module == ROOT else module.split("::")


def mod_of(segs: list[str]) -> str:
    return "::".join(segs) if segs else ROOT


# ------------------------------------------------------ dependency finding


class Dep:
    __slots__ = ("target", "line", "path")

    def __init__(self, target: str, line: int, path: str) -> None:
        self.target = target
        self.line = line
        self.path = path


class FileScanner:
    """Walks one file's tokens, tracking inline modules, and resolves every
    crate-internal path to the module file it lands in."""

    def __init__(self, toks: list[Tok], module: str, modules: set[str]) -> None:
        self.t = toks
        self.module = module
        self.modules = modules
        # One entry per open '{': the inline module's name, or None.
        self.braces: list[str | None] = []
        self.balanced = True
        self.deps: list[Dep] = []
        # Every prefix of a module path, to recognise a relative path's first
        # segment as a module (a child module of the current one).
        self.prefixes: set[str] = set()
        for m in modules:
            s = segs_of(m)
            for k in range(1, len(s) + 1):
                self.prefixes.add("::".join(s[:k]))

    # -- helpers

    def text(self, i: int) -> str:
        return self.t[i].text if 0 <= i < len(self.t) else ""

    def here(self) -> list[str]:
        return segs_of(self.module) + [b for b in self.braces if b is not None]

    def resolve(self, segs: list[str]) -> list[str] | None:
        """Absolute module segments (no `crate`) for a path as written, or
        None when it is not crate-internal."""
        if not segs:
            return None
        head = segs[0]
        if head in ("crate", "$crate"):
            return segs[1:]
        if head == "self":
            return self.here() + segs[1:]
        if head == "super":
            base = self.here()
            k = 0
            while k < len(segs) and segs[k] == "super":
                if base:
                    base = base[:-1]
                k += 1
            return base + segs[k:]
        # A relative path whose first segment names a child module of the
        # module the code is in.
        cand = self.here() + [head]
        if "::".join(cand) in self.prefixes:
            return cand + segs[1:]
        return None

    def target_of(self, abs_segs: list[str]) -> str:
        for k in range(len(abs_segs), 0, -1):
            m = "::".join(abs_segs[:k])
            if m in self.modules:
                return m
        return ROOT

    def record(self, segs: list[str], line: int) -> None:
        abs_segs = self.resolve(segs)
        if abs_segs is None:
            return
        self.deps.append(Dep(self.target_of(abs_segs), line, "::".join(segs)))

    # -- use trees

    def use_tree(self, i: int, prefix: list[str], out: list[tuple[list[str], int]]) -> int:
        """Parse one use tree at i (after `use`, or inside a group); appends
        (full path, line) leaves to out and returns the index after it."""
        segs = list(prefix)
        if self.text(i) == "::":  # `use ::std::...`: an extern crate
            segs.append("::")
            i += 1
        while True:
            tx = self.text(i)
            if tx == "{":
                i += 1
                while self.text(i) not in ("}", ""):
                    i = self.use_tree(i, segs, out)
                    if self.text(i) == ",":
                        i += 1
                return i + 1 if self.text(i) == "}" else i
            if tx == "*":
                out.append((segs, self.t[i].line))
                return i + 1
            if tx and (_is_ident_start(tx[0]) or tx == "$"):
                line = self.t[i].line
                if tx == "$":  # $crate in a macro body
                    i += 1
                    tx = "$" + self.text(i)
                if tx == "self" and segs:
                    # `a::{self, ...}`: the prefix itself.
                    pass
                else:
                    segs = segs + [tx]
                i += 1
                if self.text(i) == "::":
                    i += 1
                    continue
                if self.text(i) == "as":
                    i += 2
                out.append((segs, line))
                return i
            # Anything else ends the tree (robustness against odd input).
            return i

    # -- main walk

    def scan(self) -> list[Dep]:
        t = self.t
        i = 0
        while i < len(t):
            tx = t[i].text
            if tx == "{":
                name = None
                if self.text(i - 2) == "mod" and _is_ident_start(self.text(i - 1)[:1]):
                    name = self.text(i - 1)
                self.braces.append(name)
                i += 1
                continue
            if tx == "}":
                if self.braces:
                    self.braces.pop()
                else:
                    self.balanced = False
                i += 1
                continue
            if tx == "use" and self.text(i - 1) != "::":
                out: list[tuple[list[str], int]] = []
                j = self.use_tree(i + 1, [], out)
                for segs, line in out:
                    if segs and segs[0] != "::":
                        self.record(segs, line)
                i = max(j, i + 1)
                continue
            if _is_ident_start(tx[:1]) and self.text(i + 1) == "::" and self.text(i - 1) != "::":
                prev = self.text(i - 1)
                if prev == ".":
                    i += 1
                    continue
                head = tx
                if prev == "$" and tx == "crate":
                    head = "$crate"
                if tx == "crate" and prev == "in" and self.text(i - 2) == "(":
                    # pub(in crate::x): a visibility, not a dependency.
                    i += 1
                    continue
                line = t[i].line
                segs = [head]
                j = i + 1
                while self.text(j) == "::" and _is_ident_start(self.text(j + 1)[:1]):
                    segs.append(self.text(j + 1))
                    j += 2
                if self.text(j) == "::" and self.text(j + 1) == "{":
                    # A grouped path outside `use` cannot occur in valid Rust;
                    # treat it as a use tree anyway.
                    out = []
                    j = self.use_tree(j + 1, segs, out)
                    for s, ln in out:
                        self.record(s, ln)
                else:
                    self.record(segs, line)
                i = max(j, i + 1)
                continue
            i += 1
        if self.braces:
            self.balanced = False
        return self.deps


# ------------------------------------------------------------ graph checks


def tarjan(nodes: list[str], edges: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    sccs: list[list[str]] = []
    counter = 0

    for root in nodes:
        if root in index:
            continue
        # Iterative DFS: (node, iterator over successors).
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            advanced = False
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges.get(w, ())))))
                    advanced = True
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                u = work[-1][0]
                low[u] = min(low[u], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                sccs.append(sorted(comp))
    return sccs


def shortest_path(src: str, dst: str, edges: dict[str, set[str]], within: set[str]) -> list[str]:
    prev: dict[str, str | None] = {src: None}
    q = deque([src])
    while q:
        v = q.popleft()
        if v == dst:
            break
        for w in sorted(edges.get(v, ())):
            if w in within and w not in prev:
                prev[w] = v
                q.append(w)
    path = [dst]
    while prev[path[-1]] is not None:
        path.append(prev[path[-1]])  # type: ignore[arg-type]
    return path[::-1]


def cycles_of(comp: list[str], edges: dict[str, set[str]]) -> list[list[str]]:
    """One shortest cycle through each edge of the component, deduplicated."""
    within = set(comp)
    seen: set[tuple[str, ...]] = set()
    out: list[list[str]] = []
    for u in comp:
        for v in sorted(edges.get(u, ())):
            if v not in within:
                continue
            cyc = [u] + shortest_path(v, u, edges, within)[:-1]
            k = cyc.index(min(cyc))
            key = tuple(cyc[k:] + cyc[:k])
            if key not in seen:
                seen.add(key)
                out.append(list(key))
    out.sort(key=lambda c: (len(c), c))
    return out


def layer_of(module: str) -> int | None:
    best: tuple[int, int] | None = None  # (prefix length, layer)
    for li, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if p == ROOT:
                ok = module == ROOT
            else:
                ok = module == p or module.startswith(p + "::")
            if ok and (best is None or len(p) > best[0]):
                best = (len(p), li)
    return None if best is None else best[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src", nargs="?", help="source directory (default: src/ of this repository)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every edge")
    args = ap.parse_args()

    src_dir = Path(args.src) if args.src else Path(__file__).resolve().parent.parent / "src"
    if not src_dir.is_dir():
        print(f"check-layers: no directory {src_dir}", file=sys.stderr)
        return 2
    files = sorted(src_dir.rglob("*.rs"))
    if not files:
        print(f"check-layers: no .rs files under {src_dir}", file=sys.stderr)
        return 2

    file_of: dict[str, Path] = {}
    for f in files:
        m = module_of(f, src_dir)
        if m in file_of:
            print(f"check-layers: {f} and {file_of[m]} are both module {m}", file=sys.stderr)
            return 2
        file_of[m] = f
    modules = set(file_of)

    edges: dict[str, set[str]] = {m: set() for m in modules}
    where: dict[tuple[str, str], str] = {}
    for m in sorted(modules):
        f = file_of[m]
        toks = lex(f.read_text(encoding="utf-8"))
        scanner = FileScanner(toks, m, modules)
        deps = scanner.scan()
        if not scanner.balanced:
            # Inline-module tracking (for super::) may be off in this file.
            print(f"warning: unbalanced braces in {display(f)}; is it valid Rust?", file=sys.stderr)
        for d in deps:
            if d.target == m:
                continue
            edges[m].add(d.target)
            where.setdefault((m, d.target), f"{display(f)}:{d.line} `{d.path}`")

    n_edges = sum(len(v) for v in edges.values())
    failed = False

    if args.verbose:
        for (u, v), loc in sorted(where.items()):
            print(f"edge {u} -> {v}   ({loc})")

    # Cycles.
    sccs = [c for c in tarjan(sorted(modules), edges) if len(c) > 1]
    sccs.sort(key=lambda c: (-len(c), c))
    for c in sccs:
        failed = True
        print(f"CYCLE: {len(c)} modules import each other: {', '.join(c)}")
        for cyc in cycles_of(c, edges):
            print("  " + " -> ".join(cyc + [cyc[0]]))
        print("  edges inside it:")
        for u in c:
            for v in sorted(edges[u]):
                if v in c:
                    print(f"    {u} -> {v}   ({where[(u, v)]})")

    # Layers.
    unplaced = sorted(m for m in modules if layer_of(m) is None)
    for m in unplaced:
        failed = True
        print(f"UNPLACED: module {m} ({display(file_of[m])}) is in no layer of LAYERS")
    for li, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if not any(layer_of(m) == li and (m == p or m.startswith(p + "::")) for m in modules):
                print(f"note: layer entry {p!r} matches no module")
    for u in sorted(modules):
        lu = layer_of(u)
        if lu is None or u == ROOT:
            continue
        for v in sorted(edges[u]):
            lv = layer_of(v)
            if lv is not None and lv < lu:
                failed = True
                print(
                    f"LAYER: {u} (layer {lu + 1}) imports {v} from higher layer {lv + 1}"
                    f"   ({where[(u, v)]})"
                )

    summary = f"{len(modules)} modules, {n_edges} edges"
    if failed:
        print(
            f"check-layers: FAILED ({summary}; {len(sccs)} cycle group(s), "
            f"{len(unplaced)} unplaced module(s))"
        )
        return 1
    print(f"check-layers: ok ({summary}; no cycles; {len(LAYERS)} layers respected)")
    return 0


def display(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


if __name__ == "__main__":
    sys.exit(main())

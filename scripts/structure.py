#!/usr/bin/env python3
"""Structure report and guard rail for src/ (issue #16).

Measures what the structure issue is judged on, the same way each time:
  * file lengths (lines),
  * non-test functions longer than LIMIT lines, counted from the `fn` line to
    its closing brace; a function may be longer when the line just above its
    `fn` (or its attributes) says why in a comment starting `// long:`,
  * import cycles among src/ modules: one module per file, an edge for every
    `crate::…` / `super::…` path the non-test code of the file names (in `use`
    lines and in code), resolved to the file that holds it; a module naming
    its own ancestors (`super::IndexError`) is not an edge: that is the
    interface it implements (a parent naming its children is one),
  * `pub` items versus `pub(crate)` / narrower.

`--check` exits 1 when there is a cycle, an unexplained long function or an
`index/sql` file over 400 lines; the test command runs it so CI does.
"""
import argparse
import os
import re
import sys
from collections import defaultdict

LIMIT = 100
SQL_FILE_LIMIT = 400
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")

FN_RE = re.compile(
    r"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:default\s+)?(?:const\s+)?(?:async\s+)?"
    r"(?:unsafe\s+)?(?:extern\s+\"[^\"]*\"\s+)?fn\s+([A-Za-z_][A-Za-z0-9_]*)"
)
PATH_RE = re.compile(r"\b(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
USE_GROUP_RE = re.compile(r"\buse\s+(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)*)::\{", re.S)


def strip_code(text):
    """Blank out comments, strings and char literals, keeping line breaks, so
    that braces and paths inside them are not counted."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        nxt = text[i + 1] if i + 1 < n else ""
        if c == "/" and nxt == "/":
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif c == "/" and nxt == "*":
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:i + 8]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'r(#*)"', text[i:])
            end = '"' + m.group(1)
            j = text.find(end, i + len(m.group(0)))
            j = n if j < 0 else j + len(end)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "'":
            # a char literal ('a', '\n', '\u{1F600}') or a lifetime ('a)
            m = re.match(r"'(\\u\{[0-9a-fA-F]+\}|\\.|[^\\'])'", text[i:])
            if m:
                out.append(" " * len(m.group(0)))
                i += len(m.group(0))
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def module_of(path):
    rel = os.path.relpath(path, ROOT)[:-3].split(os.sep)
    if rel[-1] == "mod":
        rel = rel[:-1]
    if rel in (["main"], ["lib"]):
        return ()
    return tuple(rel)


def test_ranges(lines):
    """Line ranges (0-based, inclusive) of `#[cfg(test)]` items."""
    ranges = []
    i = 0
    while i < len(lines):
        if lines[i].strip().startswith("#[cfg(test)]"):
            start = i
            j, depth, opened = i, 0, False
            while j < len(lines):
                depth += lines[j].count("{") - lines[j].count("}")
                if "{" in lines[j]:
                    opened = True
                if opened and depth <= 0:
                    break
                if not opened and lines[j].rstrip().endswith(";") and j > i:
                    break
                j += 1
            ranges.append((start, j))
            i = j + 1
        else:
            i += 1
    return ranges


def functions(path, code_lines, raw_lines):
    tests = test_ranges(code_lines)
    found = []
    for i, line in enumerate(code_lines):
        m = FN_RE.match(line)
        if not m or any(a <= i <= b for a, b in tests):
            continue
        # find the body's opening brace (a declaration ending in `;` has none)
        depth, j, opened = 0, i, False
        while j < len(code_lines):
            seg = code_lines[j]
            if not opened:
                k_brace = seg.find("{")
                k_semi = seg.find(";")
                if k_semi >= 0 and (k_brace < 0 or k_semi < k_brace):
                    break
                if k_brace >= 0:
                    opened = True
                    seg = seg[k_brace:]
            if opened:
                depth += seg.count("{") - seg.count("}")
                if depth <= 0:
                    break
            j += 1
        if not opened:
            continue
        length = j - i + 1
        # a reason: `// long: …` on the comment lines just above (past attributes)
        k = i - 1
        reason = None
        while k >= 0 and (raw_lines[k].strip().startswith("#[") or raw_lines[k].strip().startswith("//")):
            s = raw_lines[k].strip()
            if s.startswith("// long:"):
                parts = [s[len("// long:"):].strip()]
                for more in raw_lines[k + 1 : i]:
                    more = more.strip()
                    if not more.startswith("//") or more.startswith("///"):
                        break
                    parts.append(more.lstrip("/").strip())
                reason = " ".join(parts)
                break
            k -= 1
        found.append((m.group(1), i + 1, length, reason))
    return found


def resolve(mod, kind, segs, modules):
    """The file module a `crate::…`/`super::…` path lands in."""
    if kind == "crate":
        base = ()
    else:
        base = mod[:-1]
        while segs and segs[0] == "super":
            base, segs = base[:-1], segs[1:]
    full = base + tuple(segs)
    for k in range(len(full), -1, -1):
        if full[:k] in modules:
            return full[:k]
    return ()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true", help="fail on cycles, unexplained long functions, long index/sql files")
    ap.add_argument("--top", type=int, default=10)
    args = ap.parse_args()

    files = []
    for d, _, names in os.walk(ROOT):
        files += [os.path.join(d, f) for f in names if f.endswith(".rs")]
    files.sort()
    modules = {module_of(f): f for f in files}

    sizes, long_fns, edges = [], [], defaultdict(set)
    pub_items = narrow = 0
    for f in files:
        raw = open(f, encoding="utf-8").read()
        code = strip_code(raw)
        raw_lines, code_lines = raw.split("\n"), code.split("\n")
        rel = os.path.relpath(f, os.path.join(ROOT, ".."))
        sizes.append((len(raw_lines) - (1 if raw.endswith("\n") else 0), rel))
        for name, line, length, reason in functions(f, code_lines, raw_lines):
            if length > LIMIT:
                long_fns.append((length, f"{rel}:{line}", name, reason))
        pub_items += len(re.findall(r"^\s*pub\s+(?:async\s+)?(?:fn|struct|enum|trait|const|static|type|mod|use)\b", code, re.M))
        narrow += len(re.findall(r"^\s*pub\((?:crate|super|in [^)]*)\)\s", code, re.M))
        mod = module_of(f)
        # edges of the non-test build: test modules are blanked
        for a, b in test_ranges(code_lines):
            for k in range(a, b + 1):
                code_lines[k] = ""
        code = "\n".join(code_lines)
        # `use crate::a::{b, c::d}` names a::b and a::c
        paths = []
        for m in USE_GROUP_RE.finditer(code):
            start = m.end()
            depth, j = 1, start
            while j < len(code) and depth:
                depth += {"{": 1, "}": -1}.get(code[j], 0)
                j += 1
            inner = code[start:j - 1]
            for item in re.findall(r"[A-Za-z_][A-Za-z0-9_]*(?:::[A-Za-z_][A-Za-z0-9_]*)*", re.sub(r"\{[^{}]*\}", "", inner)):
                paths.append((m.group(1), [s for s in m.group(2).split("::") if s] + item.split("::")))
        for m in PATH_RE.finditer(code):
            paths.append((m.group(1), [s for s in m.group(2).split("::") if s]))
        for kind, segs in paths:
            target = resolve(mod, kind, segs, modules)
            # a module using its own ancestors' items uses its own interface
            # (`super::IndexError`); a parent using its children is an edge
            if target == mod or mod[: len(target)] == target:
                continue
            edges[mod].add(target)

    # strongly connected components (Tarjan)
    index, low, stack, on, comps = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in list(modules):
        if v not in index:
            visit(v)

    name = lambda m: "::".join(m) or "crate"
    sizes.sort(reverse=True)
    long_fns.sort(reverse=True)
    print(f"files: {len(files)}, lines: {sum(s for s, _ in sizes)}")
    print(f"largest files: " + ", ".join(f"{p} {s}" for s, p in sizes[: args.top]))
    unexplained = [x for x in long_fns if not x[3]]
    print(f"non-test functions over {LIMIT} lines: {len(long_fns)} ({len(unexplained)} without a stated reason)")
    for length, where, fn, reason in long_fns:
        print(f"  {length:4d}  {fn}  {where}" + (f"  — {reason}" if reason else ""))
    print(f"import cycles: {len(comps)}")
    for c in comps:
        inner = [f"{name(a)} -> {name(b)}" for a in c for b in sorted(edges[a]) if b in c]
        print("  {" + ", ".join(name(m) for m in c) + "}: " + "; ".join(inner))
    print(f"pub items: {pub_items}, pub(crate)/narrower: {narrow}")
    big_sql = [(s, p) for s, p in sizes if p.startswith(os.path.join("src", "index", "sql")) and s > SQL_FILE_LIMIT]
    for s, p in big_sql:
        print(f"index/sql file over {SQL_FILE_LIMIT} lines: {p} {s}")
    if args.check and (comps or unexplained or big_sql):
        print("structure check failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Fails when a gateway module imports a layer above its own.

The layers are the table between the `layers:begin` and `layers:end` markers in
ARCHITECTURE.md (one source of truth): each row names a layer and the modules in it
(paths under gateway/src, without `.rs`). A module may use its own layer and the ones
below it. References are `crate::<module>` paths (in `use` items and inline) and
`super::` paths that leave a module's folder. Test modules (`#[cfg(test)]` to the end of
a file, and `tests.rs` files) are not checked: tests may build whatever they need.
"""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "gateway", "src")


def layers():
    text = open(os.path.join(ROOT, "ARCHITECTURE.md"), encoding="utf-8").read()
    m = re.search(r"<!-- layers:begin -->(.*?)<!-- layers:end -->", text, re.S)
    if not m:
        sys.exit("ARCHITECTURE.md: no layers table between layers:begin/end markers")
    out = {}
    for line in m.group(1).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].isdigit():
            continue
        level = int(cells[0])
        for mod in re.findall(r"`([a-z_/]+)`", cells[2]):
            out[mod] = level
    return out


def module_of(rel):
    """gateway/src relative file path -> its top-level module name."""
    return rel[:-3].split(os.sep)[0]


def main():
    table = layers()
    problems = []
    for dirpath, _, files in os.walk(SRC):
        for f in files:
            if not f.endswith(".rs") or f == "tests.rs":
                continue
            path = os.path.join(dirpath, f)
            rel = os.path.relpath(path, SRC)
            mod = module_of(rel)
            if mod not in table:
                problems.append(f"gateway/src/{rel}: module `{mod}` has no layer in ARCHITECTURE.md")
                continue
            mine = table[mod]
            text = open(path, encoding="utf-8").read()
            cut = text.find("#[cfg(test)]")
            if cut >= 0:
                text = text[:cut]
            code = "\n".join(l.split("//", 1)[0] for l in text.splitlines())
            uses = []
            for m in re.finditer(r"crate::([a-z_]+)", code):
                uses.append((m.start(), m.group(1)))
            # Grouped imports: `use crate::{a::X, b}`.
            for m in re.finditer(r"crate::\{([^}]*)\}", code):
                for name in re.findall(r"(?:^|,)\s*([a-z_]+)", m.group(1)):
                    uses.append((m.start(), name))
            for pos, used in uses:
                n = code.count("\n", 0, pos) + 1
                if used in ("self", "super") or used == mod:
                    continue
                if used not in table:
                    problems.append(f"gateway/src/{rel}:{n}: `crate::{used}` has no layer")
                elif table[used] > mine:
                    problems.append(
                        f"gateway/src/{rel}:{n}: `{mod}` (layer {mine}) uses "
                        f"`crate::{used}` (layer {table[used]})"
                    )
    if problems:
        print("layer check failed:")
        for p in problems:
            print("  " + p)
        sys.exit(1)
    print(f"layer check: ok ({len(table)} modules)")


if __name__ == "__main__":
    main()

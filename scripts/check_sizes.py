"""Hold the code to a size a reader can take in (issue 34): no module over 450 lines, no
function or method over 80, in the package, the tests, the benchmarks and the scripts.

    python scripts/check_sizes.py deconvviz tests benchmarks scripts

prints one line per module (``MODULE path lines``) and function (``FUNC path name lines``)
over the limits, and exits 1 if there is any (0 otherwise). tests/test_code_size.py runs it.
"""
from __future__ import annotations

import ast
import pathlib
import sys
from typing import Iterator, List, Sequence

MAX_MODULE = 450  # lines in a .py file
MAX_FUNCTION = 80  # lines of a def, from its first line (decorators aside) to its last


def oversized(roots: Sequence[str]) -> Iterator[str]:
    """One line for each module and function under ``roots`` over the limits."""
    for root in roots:
        for path in sorted(pathlib.Path(root).rglob("*.py")):
            source = path.read_text(encoding="utf-8")
            lines = source.count("\n")
            if lines > MAX_MODULE:
                yield f"MODULE {path} {lines}"
            for node in ast.walk(ast.parse(source, filename=str(path))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    length = node.end_lineno - node.lineno + 1
                    if length > MAX_FUNCTION:
                        yield f"FUNC {path} {node.name} {length}"


def main(argv: List[str]) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        print("usage: python scripts/check_sizes.py FOLDER [FOLDER ...]", file=sys.stderr)
        return 2
    found = list(oversized(argv))
    for line in found:
        print(line)
    if found:
        print(f"{len(found)} over the limits ({MAX_MODULE} lines a module, {MAX_FUNCTION} a "
              f"function): split them where they mix jobs", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Write the metric table of docs/evaluation.md from deconvviz.metric_table:
python scripts/metric_docs.py [--check]

The table sits between the markers ``<!-- metrics:begin -->`` and ``<!-- metrics:end -->``; a
test keeps it current, so a metric's defaults, direction or conventions are written once, in
the table the code reads.
"""
import os
import sys

from deconvviz import metric_table

PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs",
                    "evaluation.md")
BEGIN, END = "<!-- metrics:begin -->", "<!-- metrics:end -->"


def _params(params: dict) -> str:
    return ", ".join(f"`{k}={v!r}`" for k, v in params.items()) or "–"


def table() -> str:
    rows = ["| metric | family | better | needs | parameters (the paper's defaults) | sign | "
            "what it measures | paper |", "|---|---|---|---|---|---|---|---|"]
    for m in metric_table.entries():
        needs = ", ".join(n for n in m.needs if n != "model") or "–"
        rows.append(f"| `{m.name}` ({m.title}) | {m.family} | "
                    f"{'higher ↑' if m.higher_is_better else 'lower ↓'} | {needs} | "
                    f"{_params(m.params)} | {m.sign} | {m.summary} | {m.paper} |")
    return "\n".join(rows)


def updated(text: str) -> str:
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    note = (f"\n\n*Generated from the {len(metric_table.entries())} metrics of "
            f"`deconvviz/metric_table.py` by `scripts/metric_docs.py`. Every metric reduces a "
            f"3-channel map the same way: {metric_table.CHANNELS}.*\n")
    return f"{head}{BEGIN}\n{table()}{note}{END}{tail}"


if __name__ == "__main__":
    current = open(PATH).read()
    text = updated(current)
    if "--check" in sys.argv:
        sys.exit(0 if current == text else "docs/evaluation.md is out of date: run "
                                           "scripts/metric_docs.py")
    with open(PATH, "w") as handle:
        handle.write(text)

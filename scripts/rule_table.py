"""Write the rule table of docs/deconvnet.md from the registered rules:
python scripts/rule_table.py [--check]

The table sits between the markers ``<!-- rules:begin -->`` and ``<!-- rules:end -->``; a test
keeps it current, so a new op rule or method shows up in the docs by running this script.
"""
import os
import sys

from deconvviz.engine import registered_rules, rule_table
from deconvviz.engine.catalogue.methods import METHODS

PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs",
                    "deconvnet.md")
BEGIN, END = "<!-- rules:begin -->", "<!-- rules:end -->"


def updated(text: str) -> str:
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    # LRP's composites differ only in their layers' rules (docs/relevance.md): one column
    table = rule_table([m for m in METHODS.values() if not m.relevance or m.name == "lrp"])
    note = (f"\n\n*Generated from the {len(registered_rules())} registered op rules by "
            f"`scripts/rule_table.py`.*\n")
    return f"{head}{BEGIN}\n{table}{note}{END}{tail}"


if __name__ == "__main__":
    current = open(PATH).read()
    text = updated(current)
    if "--check" in sys.argv:
        sys.exit(0 if current == text else "docs/deconvnet.md is out of date: run "
                                           "scripts/rule_table.py")
    with open(PATH, "w") as handle:
        handle.write(text)

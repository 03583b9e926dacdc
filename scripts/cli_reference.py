"""Write docs/cli.md from the commands' --help: python scripts/cli_reference.py [--check]"""
import os
import sys

from click.testing import CliRunner

from deconvviz.cli import cli

PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs",
                    "cli.md")


def reference() -> str:
    runner = CliRunner()
    parts = ["# CLI reference", "",
             "Generated from `--help` by `scripts/cli_reference.py`; a test keeps it current.", ""]
    for name in [None, *sorted(cli.commands)]:
        args = ([name] if name else []) + ["--help"]
        text = runner.invoke(cli, args, prog_name="deconvviz", terminal_width=88).output
        parts += [f"## deconvviz {name}" if name else "## deconvviz", "", "```text",
                  text.rstrip(), "```", ""]
    return "\n".join(parts)


if __name__ == "__main__":
    text = reference()
    if "--check" in sys.argv:
        current = open(PATH).read() if os.path.exists(PATH) else ""
        sys.exit(0 if current == text else "docs/cli.md is out of date: run scripts/cli_reference.py")
    with open(PATH, "w") as handle:
        handle.write(text)

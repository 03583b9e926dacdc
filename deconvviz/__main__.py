"""``python -m deconvviz``: the same as the ``deconvviz`` command."""
from .cli import main

main()

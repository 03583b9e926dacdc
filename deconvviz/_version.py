"""deconvviz's version (pyproject.toml's ``version``; tests/test_docs.py holds them equal)."""
__version__ = "0.1.0"

"""The documentation: strict build, CLI reference up to date, a docstring for every public name."""
import importlib.util
import os
import shutil
import subprocess
import sys

import pytest

import deconvviz as dv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_public_name_has_a_docstring_and_a_place_in_the_api_page():
    api = open(os.path.join(ROOT, "docs", "api.md")).read()
    for name in dv.__all__:
        assert (getattr(dv, name).__doc__ or "").strip(), name
        assert f"::: deconvviz.{name}" in api, name


def _script(name):
    """A script of scripts/, imported (torch is loaded once for the whole suite)."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "scripts",
                                                                     f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_is_up_to_date():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "cli_reference.py"),
                           "--check"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr


def test_rule_table_is_generated_from_the_registry():
    script = _script("rule_table")
    current = open(script.PATH).read()
    assert script.updated(current) == current, "docs/deconvnet.md is out of date: run " \
                                               "scripts/rule_table.py"


def test_metric_table_is_generated_from_the_metric_table():
    script = _script("metric_docs")
    current = open(script.PATH).read()
    assert script.updated(current) == current, "docs/evaluation.md is out of date: run " \
                                               "scripts/metric_docs.py"


def test_mkdocs_strict_build(tmp_path):
    mkdocs = shutil.which("mkdocs", path=os.path.dirname(sys.executable))
    if mkdocs is None:
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]')")
    proc = subprocess.run([mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, NO_MKDOCS_2_WARNING="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "site" / "api" / "index.html").exists()
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    assert "Deconvnet" in api and "project_units" in api


def test_the_package_says_the_version_pyproject_gives():
    # scans record deconvviz.__version__ (also from a checkout that is not installed)
    import re

    text = open(os.path.join(ROOT, "pyproject.toml")).read()
    assert re.search(r'^version = "([^"]+)"$', text, re.M).group(1) == dv.__version__

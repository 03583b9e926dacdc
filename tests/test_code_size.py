"""No module over 450 lines and no function over 80 (issue 34), in the package, the tests, the
benchmarks and the scripts: scripts/check_sizes.py, run as CI would."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECKER = os.path.join(ROOT, "scripts", "check_sizes.py")


def test_no_module_or_function_is_over_the_limits():
    done = subprocess.run([sys.executable, CHECKER, "deconvviz", "tests", "benchmarks",
                           "scripts"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_checker_reports_what_is_over(tmp_path):
    (tmp_path / "long.py").write_text("x = 1\n" * 451)
    body = "".join(f"    y = {i}\n" for i in range(80))
    (tmp_path / "short.py").write_text(f"def long_one():\n{body}\n\ndef fine():\n    pass\n")
    done = subprocess.run([sys.executable, CHECKER, str(tmp_path)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1
    assert done.stdout.splitlines() == [f"MODULE {tmp_path / 'long.py'} 451",
                                        f"FUNC {tmp_path / 'short.py'} long_one 81"]
    (tmp_path / "long.py").write_text("x = 1\n" * 450)
    (tmp_path / "short.py").write_text("def fine():\n    pass\n")
    ok = subprocess.run([sys.executable, CHECKER, str(tmp_path)], capture_output=True,
                        text=True, timeout=60)
    assert ok.returncode == 0 and ok.stdout == ""

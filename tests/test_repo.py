"""Repository rules: the README's test command is what CI runs; server/ and simulator/ stay apart."""
import ast
import json
import os
import re

from tests.conftest import SPEC_VECTORS_FILE, VECTORS_FILE
from tests.processes import ROOT


def readme_commands():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    return re.findall(r"```sh\n(.+?)\n```", text)


def test_readme_has_the_two_setup_commands():
    commands = readme_commands()
    assert any(c.endswith("run_server.py --simulator") and "pip install -r requirements.txt" in c for c in commands)
    assert any(c.endswith("-m pytest") and "requirements-dev.txt" in c for c in commands)


def test_ci_runs_the_readme_test_command_exactly():
    test_command = next(c for c in readme_commands() if c.endswith("-m pytest"))
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as f:
        ci_lines = [line.strip() for line in f]
    assert test_command in ci_lines


def imported_packages(package):
    found = set()
    for dirpath, _, files in os.walk(os.path.join(ROOT, package)):
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(dirpath, name), encoding="utf-8") as f:
                    tree = ast.parse(f.read())
                for node in ast.walk(tree):
                    if isinstance(node, ast.Import):
                        found.update(a.name.split(".")[0] for a in node.names)
                    elif isinstance(node, ast.ImportFrom) and node.level == 0:
                        found.add(node.module.split(".")[0])
    return found


def test_server_and_simulator_do_not_import_each_other():
    assert "simulator" not in imported_packages("server")
    assert "server" not in imported_packages("simulator")
    assert "server" in imported_packages("server") and "simulator" in imported_packages("simulator")


def test_vectors_copy_matches_the_spec():
    # The repo carries a copy so a clone without ../shared still tests; it must not drift.
    with open(VECTORS_FILE, encoding="utf-8") as f:
        ours = json.load(f)
    assert len(ours["sign"]) >= 8 and ours["refund_notify"]
    if os.path.exists(SPEC_VECTORS_FILE):
        with open(SPEC_VECTORS_FILE, encoding="utf-8") as f:
            assert json.load(f) == ours

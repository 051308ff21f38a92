"""Repository rules: the README's test command is what CI runs; server/ and simulator/ stay apart and small."""
import ast
import json
import os
import re

from tests.support import SPEC_VECTORS_FILE, VECTORS_FILE
from tests.support.processes import ROOT


def readme_commands():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    return re.findall(r"```sh\n(.+?)\n```", text)


def readme_test_command():
    return next(c for c in readme_commands() if "-m pytest" in c)


def test_readme_has_the_two_setup_commands():
    commands = readme_commands()
    assert any(c.endswith("run_server.py --simulator") and "pip install -r requirements.txt" in c for c in commands)
    test_command = readme_test_command()
    # Python and node: the npm install from the lockfile, and pytest, which runs the node tests
    # too (tests/test_miniprogram_node.py) beside the Python ones
    assert "requirements-dev.txt" in test_command and "npm ci" in test_command
    assert test_command.endswith(".venv/bin/python -m pytest")
    assert os.path.exists(os.path.join(ROOT, "tests", "test_miniprogram_node.py"))


def test_ci_runs_the_readme_test_command_exactly():
    test_command = readme_test_command()
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as f:
        ci_lines = [line.strip() for line in f]
    assert test_command in ci_lines


MAX_MODULE_LINES, MAX_CLASS_LINES = 400, 350


def python_files(package):
    for dirpath, _, files in os.walk(os.path.join(ROOT, package)):
        for name in sorted(files):
            if name.endswith(".py"):
                yield os.path.join(dirpath, name)


def test_no_module_over_400_lines_and_no_class_over_350_in_server_and_simulator():
    too_long = []
    for package in ("server", "simulator"):
        for path in python_files(package):
            with open(path, encoding="utf-8") as f:
                text = f.read()
            where = os.path.relpath(path, ROOT)
            if len(text.splitlines()) > MAX_MODULE_LINES:
                too_long.append("%s: %d lines" % (where, len(text.splitlines())))
            too_long += ["%s: class %s, %d lines" % (where, node.name, node.end_lineno - node.lineno + 1)
                         for node in ast.walk(ast.parse(text)) if isinstance(node, ast.ClassDef)
                         and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES]
    assert too_long == []


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


def test_no_secret_in_the_mini_program():
    """The Mini Program is downloaded to every phone: no API key, no AppSecret, no signing."""
    from tests.support import DEMO
    checked = 0
    for dirpath, _, files in os.walk(os.path.join(ROOT, "miniprogram")):
        for name in files:
            with open(os.path.join(dirpath, name), encoding="utf-8") as f:
                text = f.read()
            checked += 1
            for secret in (DEMO["api_key"], DEMO["app_secret"]):
                assert secret not in text, "%s holds a secret" % name
            # the original demo computed paySign with "...&key=<API key>" on the phone
            assert "&key=" not in text and "createHmac" not in text and "md5(" not in text.lower(), name
    assert checked >= 15


def test_node_packages_are_pinned():
    with open(os.path.join(ROOT, "package.json"), encoding="utf-8") as f:
        wanted = json.load(f)["devDependencies"]
    with open(os.path.join(ROOT, "package-lock.json"), encoding="utf-8") as f:
        locked = json.load(f)["packages"]
    for name, version in wanted.items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), "%s is not pinned: %s" % (name, version)
        assert locked["node_modules/" + name]["version"] == version


def test_the_mini_program_uses_the_demo_appid():
    """The demo credentials are written once (simulator/demo.json); the Mini Program, which
    cannot read it, carries the appid only, and it must be the same."""
    from tests.support import DEMO
    with open(os.path.join(ROOT, "miniprogram", "project.config.json"), encoding="utf-8") as f:
        assert json.load(f)["appid"] == DEMO["appid"]
    with open(os.path.join(ROOT, "miniprogram", "config.js"), encoding="utf-8") as f:
        assert re.findall(r"appid: '([^']+)'", f.read()) == [DEMO["appid"]]

"""The entry scripts: thin, every flag explained in --help."""
import os
import re
import subprocess
import sys

import pytest

from tests.support.processes import ROOT

ENTRY_SCRIPTS = ("run_server.py", "run_simulator.py")
OPTION = r"--?[a-z][a-z0-9-]*(?: [A-Z][A-Z0-9_]*| \{[^}]*\})?"   # --flag, --flag VALUE, --flag {a,b}


@pytest.mark.parametrize("script", ENTRY_SCRIPTS)
def test_entry_scripts_are_entry_points_only(script):
    with open(os.path.join(ROOT, script), encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert len(lines) <= 150, "%s has %d lines: its parsing and wiring belong in a module" % (script, len(lines))


def options_without_help(help_text):
    """The options argparse lists with nothing after them (no help= given)."""
    lines = help_text.splitlines()
    bare = []
    for index, line in enumerate(lines):
        match = re.match(r"  (%s(?:, %s)*)(?:  +(\S.*))?$" % (OPTION, OPTION), line)
        if not match or match.group(2):
            continue
        following = lines[index + 1] if index + 1 < len(lines) else ""
        if not re.match(r" {6,}\S", following):
            bare.append(match.group(1))
    return bare


@pytest.mark.parametrize("script", ENTRY_SCRIPTS)
def test_every_flag_has_a_help_text(script):
    done = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    assert "--port" in done.stdout
    assert options_without_help(done.stdout) == []


TABLE_START, TABLE_END = "<!-- settings-table:start -->", "<!-- settings-table:end -->"


def documented_configuration_table():
    """The table between the markers of docs/configuration.md."""
    with open(os.path.join(ROOT, "docs", "configuration.md"), encoding="utf-8") as f:
        text = f.read()
    assert text.count(TABLE_START) == 1 and text.count(TABLE_END) == 1, "the table's markers, once each"
    return text.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0].strip()


def test_the_documented_configuration_table_is_the_one_the_code_generates():
    done = subprocess.run([sys.executable, "-m", "server.settings", "--markdown"], cwd=ROOT, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert documented_configuration_table() == done.stdout.strip()

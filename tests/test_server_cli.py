"""The entry scripts: thin, every flag explained in --help, --version, what they print when, their log lines."""
import functools
import os
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from tests.support.processes import ROOT, Proc, free_port
from tests.support.sim import wait_output

ENTRY_SCRIPTS = ("run_server.py", "run_simulator.py")
ISO_BEIJING = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+08:00"   # a log line's time
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


@functools.lru_cache(maxsize=None)
def help_of(script):
    """`script --help`, run once per script for this module's tests."""
    return subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=30)


@pytest.mark.parametrize("script", ENTRY_SCRIPTS)
def test_every_flag_has_a_help_text(script):
    done = help_of(script)
    assert done.returncode == 0, done.stderr
    assert "--port" in done.stdout
    assert options_without_help(done.stdout) == []


@pytest.mark.parametrize("script, port", [("run_server.py", 8000), ("run_simulator.py", 9000)])
def test_the_port_flag_names_its_default(script, port):
    done = help_of(script)
    described = re.search(r"\n  --port PORT\s+(.*?)\n  -", done.stdout, re.S).group(1)
    assert "default %d" % port in " ".join(described.split()), described


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


def run(*argv):
    env = dict(os.environ, ADMIN_TOKEN="")   # run_server.py --simulator then makes one up
    return subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=30, env=env)


def test_both_entry_points_print_the_one_version():
    with open(os.path.join(ROOT, "VERSION"), encoding="utf-8") as f:
        version = f.read().strip()
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    for script in ENTRY_SCRIPTS:
        done = run(script, "--version")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "%s %s" % (script, version)


def test_the_simulators_usage_line_names_the_demo_subcommand_and_its_flags_have_help():
    done = help_of("run_simulator.py")
    usage = done.stdout.split("\n\n", 1)[0]
    assert "run_simulator.py demo" in usage, usage
    demo = run("run_simulator.py", "demo", "--help")
    assert demo.returncode == 0, demo.stderr
    assert "--backend" in demo.stdout and options_without_help(demo.stdout) == []


def test_no_admin_token_is_printed_when_the_port_is_busy(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = run("run_server.py", "--simulator", "--port", str(port), "--simulator-port", str(free_port()),
                   "--simulator-tls-dir", str(tmp_path / "tls"), "--database-url", "sqlite:///%s" % (tmp_path / "db"))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "address already in use" in done.stderr
    assert "Admin API token" not in done.stdout + done.stderr


def test_a_started_backend_prints_its_token_once_listening_logs_a_404_once_with_zoned_times(tmp_path):
    port, sim_port = free_port(), free_port()
    args = ["--simulator", "--port", str(port), "--simulator-port", str(sim_port), "--simulator-tls-dir",
            str(tmp_path / "tls"), "--database-url", "sqlite:///%s" % (tmp_path / "db")]
    with Proc("run_server.py", args, port=port, env={"ADMIN_TOKEN": ""}) as proc:
        wait_output(proc, "Tap Buy")
        assert urllib_status("http://127.0.0.1:%d/no-such-path" % port) == 404
        wait_output(proc, "/no-such-path")
        proc.stop()
        out = proc.output()
    assert out.index("Backend on") < out.index("Admin API token"), out
    assert len([line for line in out.splitlines() if "/no-such-path" in line]) == 1, out
    logged = [line for line in out.splitlines() if " INFO " in line or " WARNING " in line]
    assert logged and all(re.match(ISO_BEIJING + " ", line) for line in logged), logged


def test_the_simulators_log_times_carry_the_zone(tmp_path):
    port = free_port()
    with Proc("run_simulator.py", ["--port", str(port), "--v3-dir", str(tmp_path / "v3")], port=port) as proc:
        assert urllib_status("http://127.0.0.1:%d/no-such-path" % port) == 404
        wait_output(proc, "/no-such-path")
        line = next(line for line in proc.output().splitlines() if "/no-such-path" in line)
    assert re.match(ISO_BEIJING + " ", line), line


def urllib_status(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code

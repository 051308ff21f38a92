"""The docs' examples run: every sh/bash/console block of README.md and docs/ against a real
`run_server.py --simulator`, and the Python SDK recipes against a real `run_simulator.py`."""
import os
import re
import secrets
import signal
import subprocess
import sys
import time

import pytest

from tests.support import docblocks
from tests.support.docblocks import Block
from tests.support.processes import ROOT, Proc, free_port, port_open

pytestmark = pytest.mark.e2e

BACKEND, SIMULATOR = "http://127.0.0.1:8000", "https://127.0.0.1:9000"
PLAIN_SIMULATOR = "http://127.0.0.1:9000"     # a run_simulator.py without --tls, in recipes
LEFT_OVER = re.compile(r"(127\.0\.0\.1|localhost):(8000|9000)\b")
BLOCK_TIMEOUT = 120
# the reader's checkout, minus what the servers make in it (each test run makes its own)
MADE_AT_RUN_TIME = {".git", ".venv", "sim-tls", "sim-v3", "payments.db", "payments.db-wal",
                    "payments.db-shm", ".pytest_cache", ".hypothesis"}
# every curl fails on an HTTP error with its body shown, and never hangs; an example that
# shows an error answer says --no-fail-with-body
CURL = r"""
curl() {
    local arg fail=--fail-with-body
    for arg in "$@"; do
        case "$arg" in
            -f|--fail|--fail-with-body|--no-fail-with-body|--no-fail) fail= ;;
            --*) ;;
            -*f*) fail= ;;
        esac
    done
    command curl ${fail:+"$fail"} --max-time 30 "$@"
}
"""

BLOCKS, PROBLEMS = docblocks.collect()
SHELL_PAGES = sorted({b.page for b in BLOCKS if b.kind == "shell"})
RECIPE_PAGES = sorted({b.page for b in BLOCKS if b.kind == "python"})


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    """A directory that looks like the reader's checkout (the repository's files linked, and
    .venv the Python running the tests), so the pages' relative paths (sim-tls/ca.pem,
    sim-v3/v3.json, .venv/bin/python) mean what they say, and nothing is left in the repository."""
    root = tmp_path_factory.mktemp("checkout")
    for name in os.listdir(ROOT):
        if name not in MADE_AT_RUN_TIME:
            os.symlink(os.path.join(ROOT, name), root / name)
    os.symlink(sys.prefix, root / ".venv")
    return root


@pytest.fixture(scope="module")
def stack(checkout):
    """`run_server.py --simulator` on free ports in the checkout, with a known ADMIN_TOKEN."""
    port, sim_port = free_port(), free_port()
    token = secrets.token_hex(16)
    with Proc("run_server.py", ["--simulator", "--port", str(port), "--simulator-port", str(sim_port)],
              env={"ADMIN_TOKEN": token}, port=port, cwd=str(checkout), timeout=60) as server:
        deadline = time.monotonic() + 30
        while not port_open(sim_port):
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.05)
        server.sim_url, server.token = "https://127.0.0.1:%d" % sim_port, token
        yield server


def session_env(extra=None):
    env = dict(os.environ, NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"):
        env.pop(name, None)
    env.update(extra or {})
    return env


def substitute(text, urls):
    for literal, real in urls.items():
        text = text.replace(literal, real)
    return text


def bash_script(blocks, urls):
    """One bash session: the page's blocks in order, each announced on a line of its own."""
    parts = ["set -euo pipefail", CURL]
    for n, block in enumerate(blocks):
        parts += ["printf '\\n@@docs-test block %d@@\\n'" % n,
                  substitute(docblocks.script(block), urls)]
    parts.append("printf '\\n@@docs-test done@@\\n'")
    return "\n".join(parts) + "\n"


def run_bash(script, cwd, env, timeout):
    """(exit code or None on timeout, output)."""
    proc = subprocess.Popen(["bash", "--noprofile", "--norc", "-c", script], cwd=cwd, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out.decode("utf-8", "replace")
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return None, out.decode("utf-8", "replace")


def failed_block(blocks, output):
    """The block the session was in when it ended, and that block's output."""
    marks = list(re.finditer(r"^@@docs-test block (\d+)@@$", output, re.M))
    if not marks:
        return blocks[0], output
    last = marks[-1]
    return blocks[int(last.group(1))], output[last.end():]


def unreplaced(blocks, urls):
    """Blocks that still name the default ports after substitution: they would reach whatever
    listens on this machine's :8000 or :9000 instead of the test's servers."""
    return [b.where() for b in blocks if LEFT_OVER.search(substitute(docblocks.script(b), urls))]


@pytest.mark.parametrize("page", SHELL_PAGES)
def test_shell_examples_run(page, request):
    blocks = [b for b in BLOCKS if b.page == page and b.kind == "shell"]
    stack = request.getfixturevalue("stack")
    checkout = request.getfixturevalue("checkout")
    urls = {BACKEND: stack.url, SIMULATOR: stack.sim_url}
    assert not unreplaced(blocks, urls), (
        "write the backend as %s and the bundled simulator as %s: %s"
        % (BACKEND, SIMULATOR, unreplaced(blocks, urls)))
    code, output = run_bash(bash_script(blocks, urls), checkout,
                            session_env({"ADMIN_TOKEN": stack.token}), BLOCK_TIMEOUT * len(blocks))
    if code == 0 and output.rstrip().endswith("@@docs-test done@@"):
        return
    block, tail = failed_block(blocks, output)
    how = "timed out" if code is None else "exited %s" % code
    pytest.fail("%s: the block at line %d %s\n  %s\n--- its output ---\n%s"
                % (page, block.line, how, block.first_line, tail[-6000:]), pytrace=False)


@pytest.mark.parametrize("page", RECIPE_PAGES)
def test_python_recipes_run(page, checkout):
    """Each recipe alone, as a reader pastes it, against the simulator its marker names
    (started as the page tells the reader to, on a free port)."""
    blocks = [b for b in BLOCKS if b.page == page and b.kind == "python"]
    simulator = None
    try:
        for block in blocks:
            if simulator is None or simulator.command != block.command:
                if simulator:
                    simulator.__exit__()
                simulator = start_simulator(block.command, checkout)
            run_recipe(block, simulator, checkout)
    finally:
        if simulator:
            simulator.__exit__()


def start_simulator(command, checkout):
    args = command.split()[1:]
    port = free_port()
    proc = Proc("run_simulator.py", [*args, "--port", str(port)], port=port, cwd=str(checkout),
                timeout=60)
    proc.command = command
    return proc


def run_recipe(block, simulator, checkout):
    code = substitute(block.text, {PLAIN_SIMULATOR: simulator.url})
    try:
        done = subprocess.run([os.path.join(str(checkout), ".venv", "bin", "python"), "-"],
                              input=code, capture_output=True, text=True, cwd=checkout,
                              env=session_env(), timeout=BLOCK_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        pytest.fail("%s timed out\n%s" % (block.where(), exc.output), pytrace=False)
    if done.returncode != 0:
        pytest.fail("%s: the recipe at line %d exited %d (simulator: %s)\n--- its output ---\n%s%s"
                    "\n--- the simulator's ---\n%s"
                    % (block.page, block.line, done.returncode, block.command, done.stdout,
                       done.stderr, simulator.output()[-3000:]), pytrace=False)


def test_a_curl_in_the_docs_fails_on_an_http_error_and_says_why(stack, checkout):
    blocks = [Block("p.md", 1, "sh", "curl -s http://127.0.0.1:8000/api/orders/none\n", "shell")]
    code, output = run_bash(bash_script(blocks, {BACKEND: stack.url}), checkout, session_env(), 60)
    assert code == 22 and '"UNAUTHORIZED"' in failed_block(blocks, output)[1]


def test_every_example_is_run_or_skipped():
    """No example is dropped silently: each sh/bash/console fence (counted here independently
    of the parser) is run or skipped with a reason, each marker stands before a fence, and
    there is something to run."""
    assert not PROBLEMS, "\n".join(PROBLEMS)
    counted = sum(len(re.findall(r"^[ \t]*```[ \t]*(sh|bash|console)[ \t]*$", docblocks.read(p), re.M))
                  for p in docblocks.pages())
    shell = [b for b in BLOCKS if b.lang in docblocks.SHELL]
    assert len(shell) == counted
    assert all(b.kind in ("shell", "skip") for b in shell)
    assert all(b.skip_reason for b in BLOCKS if b.kind == "skip")
    assert sum(b.kind == "shell" for b in BLOCKS) > 0, "no shell example is run"
    assert sum(b.kind == "python" for b in BLOCKS) > 0, "no Python recipe is run"


def test_each_recipe_uses_the_simulator_its_page_tells_the_reader_to_start():
    for block in (b for b in BLOCKS if b.kind == "python"):
        shown = [b for b in BLOCKS if b.page == block.page and b.kind != "python"
                 and block.command in b.text]
        assert shown, "%s: the page never shows the reader `%s`" % (block.where(), block.command)


def test_the_markdown_reader():
    page = "\n".join([
        "```console", "$ curl -s http://127.0.0.1:8000/healthz \\", "    -H 'A: b'",
        '{"status": "ok"}', "$ echo two", "```",
        "<!-- docs-test: skip (a server that runs until stopped) -->", "```sh", "run forever",
        "```", "- item", "  ```bash", "  echo indented", "  ```",
        "<!-- docs-test: python run_simulator.py --v3-key-mode certificate -->", "```python",
        "print(1)", "```", "```text", "$ not run", "```"])
    blocks, problems = docblocks.parse("p.md", page)
    assert problems == []
    assert [(b.kind, b.line) for b in blocks] == [("shell", 1), ("skip", 8), ("shell", 12),
                                                  ("python", 16), ("other", 19)]
    assert docblocks.script(blocks[0]) == ("curl -s http://127.0.0.1:8000/healthz \\\n"
                                           "    -H 'A: b'\necho two\n")
    assert blocks[1].skip_reason == "a server that runs until stopped"
    assert blocks[2].text == "echo indented\n"
    assert blocks[3].command == "run_simulator.py --v3-key-mode certificate"


@pytest.mark.parametrize("page, problem", [
    ("<!-- docs-test: skip -->\n```sh\nx\n```\n", "unknown docs-test marker"),
    ("<!-- docs-test: skip (why) -->\n\n```sh\nx\n```\n", "right before the fence"),
    ("<!-- docs-test: skip (why) -->\ntext\n", "not followed by a fence"),
    ("<!-- docs-test: python run_simulator.py -->\n```sh\nx\n```\n", "unknown docs-test marker"),
    ("```shell\nx\n```\n", "neither run nor skipped"),
    ("```\ncurl http://x\n```\n", "untagged block of commands"),
    ("```console\noutput only\n```\n", "without a `$ ` command line"),
    ("```sh\nnever closed\n", "never closed"),
])
def test_the_markdown_reader_names_what_would_be_dropped(page, problem):
    assert problem in " ".join(docblocks.parse("p.md", page)[1])


def test_a_failing_block_is_named_with_its_output(tmp_path):
    blocks = [Block("p.md", 3, "sh", "echo fine\n", "shell"),
              Block("p.md", 9, "sh", "echo about to fail\nfalse\necho never\n", "shell")]
    code, output = run_bash(bash_script(blocks, {}), tmp_path, session_env(), 30)
    block, tail = failed_block(blocks, output)
    assert code == 1 and block.line == 9
    assert "about to fail" in tail and "fine" not in tail and "never" not in tail

"""The fenced code blocks of the Markdown pages, sorted into what the docs test runs and skips."""
import dataclasses
import glob
import os
import re

from tests.support.processes import ROOT

SHELL = {"sh", "bash", "console"}
# shell under another tag would escape the test: such a block must be fenced sh/bash/console or text
SHELL_LIKE = {"shell", "zsh", "shell-session", "sh-session", "shellsession", "terminal", "cmd"}
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<ticks>`{3,}|~{3,})[ \t]*(?P<info>[^`]*)$")
# an untagged block that starts like a command is an example nobody would run: say which it is
COMMAND_LIKE = re.compile(r"^(\$ |curl |\.venv/|python3? |export |sudo |npm |pip |cd )")
MARKER = re.compile(r"^\s*<!--\s*docs-test:(?P<body>.*?)-->\s*$")
SKIP = re.compile(r"^skip\s*\((?P<reason>[^)]*\S[^)]*)\)$")
PYTHON = re.compile(r"^python\s+(?P<command>run_simulator\.py(\s+\S+)*)$")


@dataclasses.dataclass
class Block:
    page: str            # relative to the repository
    line: int            # of the opening fence, 1-based
    lang: str
    text: str            # the contents, dedented by the fence's indentation
    kind: str            # "shell", "python", "skip" or "other" (not run: another language)
    skip_reason: str = ""
    command: str = ""    # python: the run_simulator.py command the recipe needs

    @property
    def first_line(self):
        lines = [line for line in self.text.splitlines() if line.strip()]
        return lines[0] if lines else ""

    def where(self):
        return "%s:%d (%s)" % (self.page, self.line, self.first_line)


def pages():
    """README.md and every docs/**/*.md, relative to the repository, in a stable order."""
    found = sorted(os.path.relpath(p, ROOT)
                   for p in glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True))
    return ["README.md"] + found


def read(page):
    with open(os.path.join(ROOT, page), encoding="utf-8") as f:
        return f.read()


def parse(page, text):
    """(blocks, problems): every fenced block of the page, and each thing that would make
    the test drop an example silently (a bad marker, an unclosed fence, shell under
    another tag), as one line naming the page and line."""
    lines = text.splitlines()
    blocks, problems, i, pending = [], [], 0, None
    while i < len(lines):
        marker = MARKER.match(lines[i])
        if marker:
            if pending:
                problems.append("%s:%d: docs-test marker not followed by a fence" % (page, pending[0]))
            pending = (i + 1, marker.group("body").strip())
            i += 1
            continue
        fence = FENCE.match(lines[i])
        if not fence:
            if pending and lines[i].strip():
                problems.append("%s:%d: docs-test marker not followed by a fence" % (page, pending[0]))
                pending = None
            i += 1
            continue
        end = _closing(lines, i + 1, fence)
        if end is None:
            problems.append("%s:%d: fence never closed" % (page, i + 1))
            break
        body = [_dedent(line, fence.group("indent")) for line in lines[i + 1:end]]
        lang = (fence.group("info").split() or [""])[0].lower()
        if pending and pending[0] != i:
            problems.append("%s:%d: a docs-test marker goes on the line right before the fence"
                            % (page, pending[0]))
        markup = pending[1] if pending and pending[0] == i else None
        block, problem = _classify(page, i + 1, lang, "\n".join(body) + "\n", markup)
        blocks.append(block)
        if problem:
            problems.append(problem)
        pending, i = None, end + 1
    if pending:
        problems.append("%s:%d: docs-test marker not followed by a fence" % (page, pending[0]))
    return blocks, problems


def _closing(lines, start, fence):
    ticks = fence.group("ticks")
    for j in range(start, len(lines)):
        stripped = lines[j].strip()
        if stripped.startswith(ticks[0] * len(ticks)) and not stripped.strip(ticks[0]):
            return j
    return None


def _dedent(line, indent):
    return line[len(indent):] if line.startswith(indent) else line.lstrip()


def _classify(page, line, lang, text, markup):
    """The Block, and a problem line or None."""
    block = Block(page, line, lang, text, "shell" if lang in SHELL else "other")
    if markup is None:
        if lang in SHELL_LIKE:
            return block, "%s:%d: ```%s is neither run nor skipped: fence it as sh, bash or console " \
                          "(run) or text" % (page, line, lang)
        if not lang and COMMAND_LIKE.match(block.first_line):
            return block, "%s:%d: an untagged block of commands: fence it as sh, bash or console " \
                          "(run) or text" % (page, line)
        if lang == "console" and not console_commands(text):
            return block, "%s:%d: console block without a `$ ` command line" % (page, line)
        return block, None
    skip, python = SKIP.match(markup), PYTHON.match(markup)
    if skip:
        block.kind, block.skip_reason = "skip", skip.group("reason").strip()
        return block, None
    if python and lang == "python":
        block.kind, block.command = "python", python.group("command")
        return block, None
    return block, "%s:%d: unknown docs-test marker %r (use `skip (reason)` or, before a python " \
                  "block, `python run_simulator.py [flags]`)" % (page, line, markup)


def console_commands(text):
    """The commands of a ```console block: its `$ ` lines, with the lines a trailing
    backslash continues; everything else is output shown to the reader."""
    commands, continuing = [], False
    for line in text.splitlines():
        if continuing:
            commands[-1] += "\n" + line
        elif line.startswith("$ "):
            commands.append(line[2:])
        else:
            continue
        continuing = line.endswith("\\")
    return "\n".join(commands) + ("\n" if commands else "")


def script(block):
    """What bash runs for a shell block."""
    return console_commands(block.text) if block.lang == "console" else block.text


def collect():
    """(blocks, problems) over every page."""
    blocks, problems = [], []
    for page in pages():
        found, wrong = parse(page, read(page))
        blocks += found
        problems += wrong
    return blocks, problems

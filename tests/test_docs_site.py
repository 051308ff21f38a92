"""The documentation site: mkdocs build --strict succeeds without a warning; the README stays short."""
import os
import subprocess
import sys

from tests.support.processes import ROOT

README_MAX_LINES, README_MAX_BYTES = 300, 25 * 1024


def test_the_site_builds_strictly_without_a_warning(tmp_path):
    # --strict turns mkdocs.yml's validation warnings (a broken link, a missing anchor, a page
    # left out of the nav) into a failed build; any other WARNING line fails here too.
    # NO_MKDOCS_2_WARNING: mkdocs-material's banner about its own end of life, not about these docs
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "WARNING" not in output, output
    assert os.path.exists(tmp_path / "site" / "index.html")


def test_the_readme_is_short():
    with open(os.path.join(ROOT, "README.md"), "rb") as f:
        data = f.read()
    lines = data.decode("utf-8").count("\n")
    assert lines <= README_MAX_LINES, "README.md has %d lines (at most %d: the rest belongs in docs/)" % (
        lines, README_MAX_LINES)
    assert len(data) <= README_MAX_BYTES, "README.md has %d bytes (at most %d)" % (len(data), README_MAX_BYTES)


def test_the_architecture_page_names_every_module_and_package():
    """docs/architecture.md's layout block matches the tree: every module of server/ and
    simulator/ (by file name) and every package (by folder name) is in it."""
    with open(os.path.join(ROOT, "docs", "architecture.md"), encoding="utf-8") as f:
        layout = f.read().split("```text", 1)[1].split("```", 1)[0]
    missing = []
    for top in ("server", "simulator"):
        for folder, dirs, files in os.walk(os.path.join(ROOT, top)):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            if folder != os.path.join(ROOT, top) and os.path.basename(folder) + "/" not in layout:
                missing.append(os.path.relpath(folder, ROOT) + "/")
            missing += [os.path.relpath(os.path.join(folder, name), ROOT) for name in files
                        if name.endswith(".py") and name != "__init__.py" and name not in layout]
    assert missing == [], "docs/architecture.md's layout does not name: %s" % ", ".join(missing)

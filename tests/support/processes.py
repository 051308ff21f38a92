"""Start run_simulator.py / run_server.py as real processes for end-to-end tests."""
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def _nofile_limit(limit):
    """For preexec_fn: the child's descriptor limit (RLIMIT_NOFILE) set to `limit`."""
    def apply():
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
    return apply


class Proc:
    """A child process with its output in a temp file; a context manager that stops it."""

    def __init__(self, script, args=(), env=None, port=None, wait_port=True, timeout=20, nofile=None,
                 module=False, cwd=ROOT):
        self.port = port
        self.url = "http://127.0.0.1:%d" % port if port else None
        self._log = tempfile.NamedTemporaryFile(prefix="proc-", suffix=".log", delete=False)
        full_env = dict(os.environ, PYTHONUNBUFFERED="1")
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, *(["-m", script] if module else [os.path.join(ROOT, script)]), *args],
            cwd=cwd, env=full_env, stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, preexec_fn=_nofile_limit(nofile) if nofile else None)
        self._log.close()  # the child holds its own handle
        if wait_port and port:
            self.wait_port(timeout)

    def wait_port(self, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("process exited %s:\n%s" % (self.proc.returncode, self.output()))
            if port_open(self.port):
                return
            time.sleep(0.05)
        raise RuntimeError("port %d not open after %ss:\n%s" % (self.port, timeout, self.output()))

    def output(self):
        with open(self._log.name, encoding="utf-8", errors="replace") as f:
            return f.read()

    def wait(self, timeout=20):
        return self.proc.wait(timeout)

    def stop(self, sig=signal.SIGTERM, timeout=10):
        """Send sig (SIGTERM by default) and wait; SIGKILL if it does not exit in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        os.unlink(self._log.name)

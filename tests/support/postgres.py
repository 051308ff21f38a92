"""A throwaway PostgreSQL server for tests and the bench: initdb + pg_ctl from the
`postgresql` package, on 127.0.0.1 and a free port, its data in a temporary folder.

As root (sessions and CI are), initdb and postgres refuse to run: they are started as the
`postgres` system user the package creates, the data folder owned by it.
"""
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time

from tests.support.processes import free_port


class Unavailable(RuntimeError):
    """No PostgreSQL server can be started here (the one-line reason is the message)."""


def bin_dir():
    """The folder of initdb/pg_ctl/psql, or None."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return os.path.dirname(os.path.realpath(found))
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return os.path.dirname(candidates[-1]) if candidates else None


def _running(pid):
    """True while a process runs (a zombie nobody reaped yet does not)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


class PostgresServer:
    """start() -> a running server; url(db) -> its DATABASE_URL; create_database(); stop().
    `durable=False` (tests) turns fsync off: a test kills backend processes, never the machine."""

    def __init__(self, durable=False):
        self.durable = durable
        self.port = None
        self.folder = None
        self._bin = None
        self._user = None

    def start(self):
        self._bin = bin_dir()
        if self._bin is None:
            raise Unavailable("no PostgreSQL server binaries (initdb, pg_ctl): apt-get install postgresql")
        self.folder = tempfile.mkdtemp(prefix="wxpay-pg-")
        os.chmod(self.folder, 0o755)
        if os.geteuid() == 0:
            try:
                self._user = pwd.getpwnam("postgres")
            except KeyError:
                raise Unavailable("running as root and there is no 'postgres' user to run the server as") from None
            os.chown(self.folder, self._user.pw_uid, self._user.pw_gid)
        data = os.path.join(self.folder, "data")
        self._run("initdb", "-D", data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync",
                  "--locale=C")
        for attempt in range(3):
            self.port = free_port()
            options = ("-p %d -k %s -c listen_addresses=127.0.0.1 -c max_connections=300 -c shared_buffers=64MB"
                       % (self.port, self.folder))
            if not self.durable:
                options += " -c fsync=off -c full_page_writes=off -c synchronous_commit=off"
            self._options = options
            try:
                self.resume()
                return self
            except Unavailable as exc:
                # another process (a parallel test) took the free port before the server bound it
                if "could not create listen socket" not in str(exc) or attempt == 2:
                    raise
        return self

    def pause(self, mode="fast"):
        """Shut the server down (an outage), keeping its data for resume(): `mode` "fast"
        (sessions ended, a checkpoint) or "immediate" (every process quits at once, recovery
        at the next start)."""
        self._run("pg_ctl", "-D", os.path.join(self.folder, "data"), "-m", mode, "-w", "stop")

    def kill(self, timeout=10):
        """SIGKILL the postmaster (a crash), then wait for its orphaned backends to notice and
        exit: until they have, a new postmaster refuses to start on their shared memory. Its
        lock files go too: the dead postmaster may stay a zombie (its parent is whatever
        adopted it), and a zombie's PID in them looks like a postmaster still running."""
        lock = os.path.join(self.folder, "data", "postmaster.pid")
        with open(lock) as f:
            postmaster = int(f.readline())
        with open("/proc/%d/task/%d/children" % (postmaster, postmaster)) as f:
            backends = [int(p) for p in f.read().split()]
        os.kill(postmaster, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while any(_running(pid) for pid in [postmaster] + backends):
            if time.monotonic() > deadline:
                raise Unavailable("the backends of a killed postmaster did not exit within %ss" % timeout)
            time.sleep(0.02)
        for path in (lock, os.path.join(self.folder, ".s.PGSQL.%d.lock" % self.port)):
            os.unlink(path)

    def resume(self):
        self._run("pg_ctl", "-D", os.path.join(self.folder, "data"), "-o", self._options,
                  "-l", os.path.join(self.folder, "log"), "-w", "-t", "30", "start")

    def url(self, database="postgres"):
        return "postgresql://postgres@127.0.0.1:%d/%s" % (self.port, database)

    def psql(self, sql, database="postgres"):
        """Run SQL with psql; its output (tuples only, unaligned)."""
        return self._run("psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
                         "-p", str(self.port), "-U", "postgres", "-d", database, "-c", sql).strip()

    def create_database(self, name):
        self.psql('CREATE DATABASE "%s"' % name)
        return self.url(name)

    def create_schema(self, name):
        """A DATABASE_URL whose tables live in a new, empty schema of the server's database:
        as good as a new database for the store, and milliseconds instead of a third of a
        second (CREATE DATABASE copies a template)."""
        self.psql('CREATE SCHEMA "%s"' % name)
        return self.url() + "?search_path=" + name

    def stop(self):
        if self.folder is None:
            return
        try:
            if self.port is not None:
                self._run("pg_ctl", "-D", os.path.join(self.folder, "data"), "-m", "immediate", "-w", "stop")
        except Unavailable:
            pass
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder = None

    def _run(self, program, *args):
        def as_postgres():
            os.setgid(self._user.pw_gid)
            os.setuid(self._user.pw_uid)
        done = subprocess.run([os.path.join(self._bin, program), *args], capture_output=True, text=True,
                              timeout=60, cwd=self.folder,
                              preexec_fn=as_postgres if self._user and program != "psql" else None)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["exit %d" % done.returncode]
            log = os.path.join(self.folder or "", "log")
            if os.path.exists(log):
                with open(log, encoding="utf-8", errors="replace") as f:
                    tail += f.read().strip().splitlines()[-3:]
            raise Unavailable("%s failed: %s" % (program, " | ".join(tail)))
        return done.stdout

"""Several serving processes on one listening socket: forked, restarted with back-off, drained on SIGTERM."""
import asyncio
import logging
import os
import signal
import time

log = logging.getLogger("run_server")
RESTART_AFTER = 0.25, 30.0   # back-off of a restart: doubled from 0.5 s up to 30 s while replacements die young
SIGNALS = {signal.SIGTERM, signal.SIGINT}


def run(event_loop, main_coroutine):
    """asyncio.run() on the configured event loop (EVENT_LOOP: asyncio or uvloop)."""
    factory = None
    if event_loop == "uvloop":
        import uvloop
        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main_coroutine)


class Supervisor:
    """N forked processes each serving `sockets` through serve_process(sockets) (their exit
    code). A process that dies is started again, after 0.25 s, or, while its replacements keep
    dying within 30 s of their start, after 0.5 s doubling up to 30 s (a database outage does
    not spin, and never stops the processes that still serve). SIGTERM or SIGINT closes the
    listening sockets here (new connections are refused at once, so a proxy tries another
    host), is passed on to every process, each drains its requests, and run() returns when all
    have ended."""

    def __init__(self, processes, sockets, serve_process, on_end=None):
        self.processes, self.sockets, self.serve_process = processes, sockets, serve_process
        self.on_end = on_end   # called with the pid of each process that ended (its metrics are marked dead)
        self.pid = os.getpid()
        self.children, self.stopping, self.pending = {}, [], []   # pid -> (index, started); [(due, index)]
        self.delays = {}                                           # index -> the back-off of its next restart

    def run(self):
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        for index in range(self.processes):
            self.spawn(index)
        log.info("started %d processes: %s", self.processes, " ".join(map(str, self.children)))
        while self.children or (self.pending and not self.stopping):
            self.start_due()
            pid, status = os.waitpid(-1, os.WNOHANG) if self.children else (0, 0)
            if pid == 0:
                time.sleep(0.05)
                continue
            self.ended(pid, status)
        for sock in self.sockets:
            sock.close()
        log.info("stopped")
        return 0

    def spawn(self, index):
        # signals blocked from the check to the fork: a stop arriving in between must see this child
        signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        try:
            if self.stopping:
                return
            pid = os.fork()
            if pid == 0:
                os._exit(child_main(self.serve_process, self.sockets, self.pid))
            self.children[pid] = (index, time.monotonic())
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)

    def stop(self, signum, _frame):
        if not self.stopping:
            log.info("%s: stopping %d processes (each drains its requests)", signal.Signals(signum).name,
                     len(self.children))
            for sock in self.sockets:   # nobody would accept what queues now: refuse it instead
                sock.close()
        self.stopping.append(signum)
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def start_due(self):
        now = time.monotonic()
        for item in [p for p in self.pending if p[0] <= now]:
            self.pending.remove(item)
            self.spawn(item[1])

    def ended(self, pid, status):
        """A process ended: started again after its back-off, unless we are stopping."""
        index, started = self.children.pop(pid, (None, None))
        if index is not None and self.on_end is not None:
            self.on_end(pid)
        if index is None or self.stopping:
            return
        how = ("signal %s" % signal.Signals(os.WTERMSIG(status)).name if os.WIFSIGNALED(status)
               else "exit code %d" % os.waitstatus_to_exitcode(status))
        young = time.monotonic() - started < RESTART_AFTER[1]
        delay = min(self.delays.get(index, RESTART_AFTER[0]) * 2, RESTART_AFTER[1]) if young else RESTART_AFTER[0]
        self.delays[index] = delay if young else RESTART_AFTER[0]
        log.warning("process %d ended (%s); starting another in %gs", pid, how, delay)
        self.pending.append((time.monotonic() + delay, index))


def child_main(serve_process, sockets, supervisor):
    """A forked serving process: its exit code."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
    drain_if_orphaned(supervisor)
    try:
        return serve_process(sockets)
    except BaseException:
        log.exception("process %d failed", os.getpid())
        return 1
    finally:
        logging.shutdown()


def drain_if_orphaned(supervisor):
    """Linux: SIGTERM this process (it drains) if the supervising process dies, even by SIGKILL,
    rather than serving on unsupervised."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != supervisor:   # it died before prctl took effect (it may be PID 1 itself: a container)
        os.kill(os.getpid(), signal.SIGTERM)

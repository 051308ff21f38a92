"""Drive wrk (when installed) with the bench's raw requests; same result shape as loadgen."""
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

from bench.common import BENCH, BenchError

SCRIPT = os.path.join(BENCH, "wrk_script.lua")


def wrk_path():
    return shutil.which("wrk")


def wrk_version():
    path = wrk_path()
    if not path:
        return None
    out = subprocess.run([path, "-v"], capture_output=True, text=True, timeout=10)
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0].split(" Copyright")[0] if text else "wrk"


def run(port, requests, mode, concurrency, duration, timeout_s, threads=2, workdir=None, until=None):
    """mode rotate (duration-bounded) or once (each request once; duration is a cap).

    wrk runs for its whole -d even when every thread has stopped, so for `once` the caller
    passes until(): polled every 50 ms, True when the server has done the work; wrk then
    gets SIGINT, which makes it stop and print its summary at once.
    """
    fd, path = tempfile.mkstemp(prefix="wrk-", suffix=".hex", dir=workdir)
    with os.fdopen(fd, "w") as f:
        for raw in requests:
            f.write(raw.hex() + "\n")
    threads = max(1, min(threads, concurrency, len(requests)))
    argv = [wrk_path(), "-t%d" % threads, "-c%d" % concurrency, "-d%ds" % max(1, int(duration)),
            "--timeout", "%ds" % int(timeout_s), "-s", SCRIPT,
            "http://127.0.0.1:%d/" % port, "--", path, mode, str(threads)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + duration + 60
        while proc.poll() is None:
            if until is not None and until():
                proc.send_signal(signal.SIGINT)
                break
            if time.monotonic() > deadline:
                raise BenchError("wrk did not finish within %d s" % (duration + 60))
            time.sleep(0.05)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        os.unlink(path)
    out = subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)
    line = next((l for l in out.stdout.splitlines() if l.startswith("WRKJSON ")), None)
    if out.returncode != 0 or line is None:
        raise BenchError("wrk failed (exit %s):\n%s\n%s" % (out.returncode, out.stdout, out.stderr))
    raw = json.loads(line[len("WRKJSON "):])
    wall = raw["duration_us"] / 1e6
    non2xx = raw["non2xx_or_overshoot"] - raw["overshoot"]
    errors = raw["err_connect"] + raw["err_read"] + raw["err_write"] + raw["err_timeout"]
    return {"generator": "wrk", "sent": raw["requests"], "completed": raw["requests"],
            "ok": raw["ok"], "non2xx": non2xx, "overshoot_404": raw["overshoot"],
            "errors": errors, "wall": wall, "rps": raw["requests"] / wall if wall else 0.0,
            "latency_ms": {"p50": raw["p50_us"] / 1000, "p90": raw["p90_us"] / 1000,
                           "p99": raw["p99_us"] / 1000, "max": raw["max_us"] / 1000},
            "concurrency": concurrency, "threads": threads, "wrk_raw": raw}

"""Shared helpers of the bench: child processes, /proc accounting, raw requests, signing.

Standard library plus `requests` only (both are in requirements.txt), so the bench runs
on a fresh clone after the README's test install.
"""
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
CLK_TCK = os.sysconf("SC_CLK_TCK")

DEMO = {"appid": "wxd930ea5d5a258f4f", "app_secret": "8a2f3c4d5e6f70819a0b1c2d3e4f5061",
        "mch_id": "10000100", "api_key": "192006250b4c09247ec02edce69f6a2d"}


class BenchError(RuntimeError):
    """The bench itself cannot go on (a process did not start, a phase timed out)."""


# -- /proc accounting -----------------------------------------------------------------
def cpu_seconds(pid):
    """utime + stime of a process (all its threads), in seconds, from /proc/<pid>/stat."""
    with open("/proc/%d/stat" % pid, "rb") as f:
        data = f.read()
    fields = data[data.rindex(b")") + 2:].split()   # fields from #3 (state) on
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # #14 utime, #15 stime


def thread_cpu_seconds(pid):
    """{tid: utime + stime} of every thread of a process (/proc/<pid>/task/<tid>/stat)."""
    out = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            out[int(tid)] = cpu_seconds_path("/proc/%d/task/%s/stat" % (pid, tid))
        except (OSError, ValueError):
            pass    # the thread ended meanwhile
    return out


def cpu_seconds_path(path):
    with open(path, "rb") as f:
        data = f.read()
    fields = data[data.rindex(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def children_of(pid):
    """PIDs of a process's live children (/proc/<pid>/task/<tid>/children, every thread)."""
    out = []
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return out
    for tid in tids:
        try:
            with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                out.extend(int(p) for p in f.read().split())
        except OSError:
            pass
    return out


def tree_cpu_seconds(pid):
    """CPU of a process and everything below it: its own utime+stime, plus cutime+cstime (its
    children that ended and were reaped), plus the same for every live child. Monotonic
    while the tree lives, so the difference of two readings is the tree's CPU in between,
    short-lived children included (a PostgreSQL server's connection processes)."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read()
    except OSError:
        return 0.0      # ended meanwhile: its CPU is in its parent's cutime now
    fields = data[data.rindex(b")") + 2:].split()
    own = sum(int(fields[i]) for i in (11, 12, 13, 14)) / CLK_TCK   # utime stime cutime cstime
    return own + sum(tree_cpu_seconds(child) for child in children_of(pid))


def machine_cpu_seconds():
    """(busy, all) CPU seconds of the whole machine since boot, every core (/proc/stat);
    busy = all - idle - iowait."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    total = sum(fields[:8])   # user nice system idle iowait irq softirq steal (guest is in user)
    return (total - fields[3] - fields[4]) / CLK_TCK, total / CLK_TCK


def rss_mb(pid):
    """VmRSS of a process in MB (MiB), from /proc/<pid>/status."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise BenchError("no VmRSS for pid %d" % pid)


# -- ports and processes --------------------------------------------------------------
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Child:
    """A child process whose output goes to a log file; stop() ends it by its own PID."""

    def __init__(self, name, argv, log_path, env=None, port=None, timeout=20.0):
        self.name, self.port, self.log_path = name, port, log_path
        full_env = dict(os.environ, PYTHONUNBUFFERED="1")
        for key, value in (env or {}).items():
            if value is None:
                full_env.pop(key, None)
            else:
                full_env[key] = value
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=full_env, stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.pid = self.proc.pid
        if port is not None:
            self.wait_port(timeout)

    def wait_port(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError("%s exited with code %s before listening; its output:\n%s"
                                 % (self.name, self.proc.returncode, self.output()))
            if port_open(self.port):
                return
            time.sleep(0.05)
        raise BenchError("%s did not listen on port %d within %.0f s; its output:\n%s"
                         % (self.name, self.port, timeout, self.output()))

    def alive(self):
        return self.proc.poll() is None

    def check_alive(self):
        if not self.alive():
            raise BenchError("%s died (exit code %s); its output:\n%s"
                             % (self.name, self.proc.returncode, self.output()))

    def output(self, tail=4000):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - tail))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return "(no output)"

    def cpu(self):
        return cpu_seconds(self.pid)

    def rss(self):
        return rss_mb(self.pid)

    def thread_cpu(self):
        return thread_cpu_seconds(self.pid)

    def stop(self, timeout=10.0):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self._log.close()
        return self.proc.returncode


def python_argv(script, *args):
    return [sys.executable, os.path.join(ROOT, script), *map(str, args)]


# -- raw HTTP/1.1 requests ------------------------------------------------------------
def raw_request(method, path, port, body=b"", headers=None, content_type=None):
    """One HTTP/1.1 keep-alive request as bytes (what both load generators send)."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    lines = ["%s %s HTTP/1.1" % (method, path), "Host: 127.0.0.1:%d" % port]
    if content_type:
        lines.append("Content-Type: " + content_type)
    for key, value in (headers or {}).items():
        lines.append("%s: %s" % (key, value))
    if body or method in ("POST", "PUT"):
        lines.append("Content-Length: %d" % len(body))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def order_request(port, token=None, code=None, product_id="coffee", quantity=1):
    """POST /api/orders: Bearer token (token flow) or code in the body (one-call flow)."""
    data = {"product_id": product_id, "quantity": quantity}
    headers = {}
    if code is not None:
        data["code"] = code
    if token is not None:
        headers["Authorization"] = "Bearer " + token
    return raw_request("POST", "/api/orders", port, json.dumps(data), headers,
                       "application/json")


# -- WeChat Pay v2 signing (protocol.md section 3), the bench's own copy --------------
def sign_md5(params, key):
    items = sorted((k, v) for k, v in params.items() if k != "sign" and v not in (None, ""))
    text = "&".join("%s=%s" % (k, v) for k, v in items) + "&key=" + key
    return hashlib.md5(text.encode("utf-8")).hexdigest().upper()


def to_xml(params):
    return "<xml>" + "".join("<%s><![CDATA[%s]]></%s>" % (k, v, k)
                             for k, v in params.items()) + "</xml>"


def notification_xml(out_trade_no, openid, total_fee, transaction_id, time_end, nonce):
    """A correctly signed (MD5, demo key) payment notification, as WeChat sends it."""
    fields = {
        "appid": DEMO["appid"], "bank_type": "OTHERS", "cash_fee": str(total_fee),
        "fee_type": "CNY", "is_subscribe": "N", "mch_id": DEMO["mch_id"], "nonce_str": nonce,
        "openid": openid, "out_trade_no": out_trade_no, "result_code": "SUCCESS",
        "return_code": "SUCCESS", "time_end": time_end, "total_fee": str(total_fee),
        "trade_type": "JSAPI", "transaction_id": transaction_id,
    }
    fields["sign"] = sign_md5(fields, DEMO["api_key"])
    return to_xml(fields)


def pay_sign_params(prepay_id, timestamp, nonce):
    """wx.requestPayment's fields for /sim/pay (MD5), with paySign over appId too."""
    params = {"appId": DEMO["appid"], "timeStamp": str(timestamp), "nonceStr": nonce,
              "package": "prepay_id=" + prepay_id, "signType": "MD5"}
    params["paySign"] = sign_md5(params, DEMO["api_key"])
    del params["appId"]
    return params

"""Prometheus metrics: their names, one function per thing counted, the scrape (one process or --processes N)."""
import glob
import os
import re
import shutil
import tempfile
import time

# prometheus_client is imported by setup(), not here: with --processes N its multiprocess
# mode must be chosen (PROMETHEUS_MULTIPROC_DIR set) before the library is first imported
_M = None
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
PAYMENT_HOW = {"notify": "notification", "orderquery": "orderquery", "reconciliation": "reconciliation"}
REFUND_OUTCOME = {"PROCESSING": "accepted", "FAILED": "refused", "SUCCESS": "success", "REFUNDCLOSE": "closed",
                  "CHANGE": "abnormal"}
# a refusal's message (it may name an order or a nonce) -> one of a few classes: labels stay few
_REASONS = (("replay", re.compile(r"^replayed")), ("signature", re.compile(r"^(signature|sign_type)")),
            ("amount", re.compile(r"amount|total_fee|refund_fee")), ("unknown", re.compile(r"^unknown (order|refund)")))
KINDS = ("payment", "refund", "other")   # the notification log's kinds (server/service/notelog.py)
_FILE = re.compile(r"[a-z_]+_[0-9]+\.db")   # prometheus_client's multiprocess files: <type>_<pid>.db
_V3_TEMPLATES = ((re.compile(r"(/out-trade-no/)[^/]+"), r"\1{out_trade_no}"),
                 (re.compile(r"(/refund/domestic/refunds/)[^/]+"), r"\1{out_refund_no}"))


class _Metrics:
    def __init__(self, prom, multiprocess):
        self.prom, self.multiprocess = prom, multiprocess
        self.orders = prom.Counter("wxpay_orders_created", "Orders created (stored, whether or not WeChat "
                                   "gave a prepay_id)")
        self.payments = prom.Counter("wxpay_payments_recorded", "Orders recorded as paid, by what told us",
                                     ["how"])
        self.notifications = prom.Counter("wxpay_notifications", "Notifications from WeChat by verdict "
                                          "(refused: by reason class)", ["version", "kind", "verdict", "reason"])
        self.refunds = prom.Counter("wxpay_refunds", "Refunds reaching a state: accepted or refused by "
                                    "WeChat, then success, closed or abnormal", ["outcome"])
        self.store_errors = prom.Counter("wxpay_store_errors", "Database operations that failed")
        self.calls = prom.Histogram("wxpay_wechat_call_seconds", "WeChat calls (retries included) by endpoint "
                                    "and outcome", ["endpoint", "outcome"], buckets=LATENCY_BUCKETS)
        mode = {"multiprocess_mode": "livesum"}
        self.pool_open = prom.Gauge("wxpay_wechat_connections_open", "Connections to WeChat open", **mode)
        self.pool_idle = prom.Gauge("wxpay_wechat_connections_idle", "Connections to WeChat idle in the pool",
                                    **mode)


def setup(multiprocess_dir=None):
    """Create the metrics (once per process tree); multiprocess_dir: --processes N's shared
    directory, set before the library is imported and inherited by the forked processes."""
    global _M
    if _M is None:
        if multiprocess_dir:
            os.environ[MULTIPROC_ENV] = multiprocess_dir
        else:   # one process: its own counters, whatever the environment says
            os.environ.pop(MULTIPROC_ENV, None)
        import prometheus_client
        prometheus_client.disable_created_metrics()   # *_created samples: not written in multiprocess mode either
        _M = _Metrics(prometheus_client, bool(multiprocess_dir))
    return _M


def scrape():
    """(content type, body) of a scrape: this process's metrics, or every process's with --processes N."""
    m = setup()
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    registry = m.prom.REGISTRY
    if m.multiprocess:
        registry = CollectorRegistry()
        _files_collector()(registry)
    return CONTENT_TYPE_LATEST, generate_latest(registry)


def _files_collector():
    """prometheus_client's collector of the processes' files (<type>_<pid>.db), past a file a
    starting process has created but not yet sized (the library read it as an error: a 500)."""
    from prometheus_client import multiprocess

    class Collector(multiprocess.MultiProcessCollector):
        def collect(self):
            # only the library's own files: METRICS_DIR may hold others, which start-up leaves alone
            names = [f for f in glob.glob(os.path.join(self._path, "*.db")) if _FILE.fullmatch(os.path.basename(f))]
            return self.merge([f for f in names if _sized(f)])
    return Collector


def _sized(path):
    """Whether the file holds at least its header (the 8 bytes saying how much of it is used)."""
    try:
        return os.path.getsize(path) >= 8
    except FileNotFoundError:   # a dead process's gauges, removed since the listing
        return False


class MultiprocessDirectory:
    """`with MultiprocessDirectory(path) as directory:` --processes N's metrics files: `path`
    (created if missing, emptied of a previous run's files: counters start at zero with the
    server), or ("") a new temporary directory removed at the end."""

    def __init__(self, path=""):
        self.path, self.made = path, None

    def __enter__(self):
        if not self.path:
            self.made = tempfile.mkdtemp(prefix="wxpay-metrics-")
            return self.made
        os.makedirs(self.path, exist_ok=True)
        for name in os.listdir(self.path):
            if _FILE.fullmatch(name):
                os.remove(os.path.join(self.path, name))
        return self.path

    def __exit__(self, *exc):
        if self.made:
            shutil.rmtree(self.made, ignore_errors=True)
        return False


def process_dead(pid):
    """A serving process ended: its gauges stop counting (its counters still do)."""
    if _M is not None and _M.multiprocess:
        from prometheus_client import multiprocess
        multiprocess.mark_process_dead(pid)


def order_created():
    setup().orders.inc()


def payment_recorded(source):
    setup().payments.labels(PAYMENT_HOW.get(source, "other")).inc()


def notification(version, kind, verdict, reason=""):
    """A notification's verdict: accepted, duplicate or refused (reason: its message, classed).
    kind: the notification log's "payment", "refund" or "other" (an event the backend has
    nothing to do with; a v3 one refused before it was opened: what its event_type claims)."""
    setup().notifications.labels(version, kind if kind in KINDS else "other", verdict,
                                 reason_class(reason) if reason else "").inc()


def refund_moved(status):
    setup().refunds.labels(REFUND_OUTCOME.get(status, "other")).inc()


def store_error():
    setup().store_errors.inc()


def pool_changed(opened, idle):
    """The WeChat pool's connections changed by these many (open, idle)."""
    m = setup()
    if opened:
        m.pool_open.inc(opened)
    if idle:
        m.pool_idle.inc(idle)


def reason_class(message):
    for name, pattern in _REASONS:
        if pattern.search(message):
            return name
    return "other"


def v3_endpoint(path):
    """A v3 path as its template: no query, the order's or refund's number a placeholder."""
    path = path.split("?", 1)[0]
    for pattern, template in _V3_TEMPLATES:
        path = pattern.sub(template, path)
    return path


class WeChatCall:
    """`async with WeChatCall(endpoint):` times one WeChat call into the histogram, its outcome
    from what it raised: ok, wechat_error (WeChat said no), timeout, upstream_error."""

    def __init__(self, endpoint):
        self.endpoint = endpoint

    async def __aenter__(self):
        self.started = time.monotonic()
        return self

    async def __aexit__(self, typ, exc, tb):
        if typ is None or issubclass(typ, Exception):
            setup().calls.labels(self.endpoint, _outcome(exc)).observe(time.monotonic() - self.started)
        return False


def _outcome(exc):
    from server.wechat import UpstreamTimeout, WeChatRefused, bill
    if exc is None:
        return "ok"
    if isinstance(exc, (WeChatRefused, bill.BillNotReady)):
        return "wechat_error"
    return "timeout" if isinstance(exc, UpstreamTimeout) else "upstream_error"

"""The backend's log lines: Beijing times with the offset, text or one JSON object a line, each request's id and order."""
import contextlib
import contextvars
import datetime
import json
import logging
import re
import sys
import uuid

from server.domain import BEIJING

TEXT, JSON = "text", "json"
FORMATS = (TEXT, JSON)
REQUEST_ID_HEADER = "X-Request-Id"
# what a log line names besides its message: set for a request's task (or a piece of the sweep's work)
REQUEST_ID = contextvars.ContextVar("request_id", default=None)
OUT_TRADE_NO = contextvars.ContextVar("out_trade_no", default=None)
_SENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")   # a proxy's id kept as sent; anything else is replaced
_ACCESS = logging.getLogger("tornado.access")
_BREAKS = {ord("\r"): "\\r", ord("\n"): "\\n", 0x0B: "\\x0b", 0x0C: "\\x0c", 0x1C: "\\x1c", 0x1D: "\\x1d",
           0x1E: "\\x1e", 0x85: "\\x85", 0x2028: "\\u2028", 0x2029: "\\u2029"}   # what str.splitlines() splits at


def zoned(created):
    """A record's time in ISO 8601 with its offset, in Beijing time: the zone of the API's times and order numbers."""
    return datetime.datetime.fromtimestamp(created, BEIJING).isoformat(timespec="milliseconds")


class ZonedFormatter(logging.Formatter):
    """Today's text lines: time, level, logger, message (and a traceback on the lines after)."""

    def formatTime(self, record, datefmt=None):
        return zoned(record.created)

    def formatMessage(self, record):
        # a message may quote what a client or a forger sent: its line breaks must not start a line
        record.message = record.message.translate(_BREAKS)
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, request_id and out_trade_no when
    known, exc_info (a traceback as one string), and an access line's status, method, path, duration_ms."""

    def format(self, record):
        entry = {"time": zoned(record.created), "level": record.levelname, "logger": record.name,
                 "message": record.getMessage()}
        for field, var in (("request_id", REQUEST_ID), ("out_trade_no", OUT_TRADE_NO)):
            value = getattr(record, field, None) or var.get()
            if value:
                entry[field] = value
        entry.update(getattr(record, "http", {}))
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry)   # ASCII: \n and any character escaped, so always one line


def formatter(log_format=TEXT):
    if log_format == JSON:
        return JsonFormatter()
    return ZonedFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")


def handler(log_format=TEXT, stream=None):
    """A handler writing `log_format` lines to `stream` (standard error)."""
    made = logging.StreamHandler(stream or sys.stderr)
    made.setFormatter(formatter(log_format))
    return made


def setup(level, access_log, log_format=TEXT):
    """The root logger writes `log_format` lines to standard error at `level` (unless logging is set up already)."""
    logging.basicConfig(level=level, handlers=[handler(log_format)])
    if not access_log:  # a line per request is the proxy's job; errors are still logged
        logging.getLogger("tornado.access").setLevel(logging.WARNING)
        logging.getLogger("simulator.access").setLevel(logging.WARNING)


def request_id(sent):
    """A request's id: the one a proxy sent when it is 1 to 128 of [A-Za-z0-9._:-], else a new uuid4 hex."""
    return sent if sent is not None and _SENT_ID.fullmatch(sent) else uuid.uuid4().hex


def bind_request(value):
    """The current task's lines (a request's: each runs in a task of its own) carry this id."""
    REQUEST_ID.set(value)


def bind_order(out_trade_no):
    """The current task's lines carry this order number from here on."""
    if out_trade_no:
        OUT_TRADE_NO.set(out_trade_no)


@contextlib.contextmanager
def about_order(out_trade_no):
    """Lines inside carry this order number (a piece of a longer task's work, as the sweep's)."""
    token = OUT_TRADE_NO.set(out_trade_no)
    try:
        yield
    finally:
        OUT_TRADE_NO.reset(token)


def access(handler):
    """Tornado's access line (its text unchanged), carrying the request's id and, in JSON, its parts."""
    status, request = handler.get_status(), handler.request
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    if not _ACCESS.isEnabledFor(level):
        return
    duration = 1000.0 * request.request_time()
    http = {"status": status, "method": request.method, "path": request.path, "duration_ms": round(duration, 2)}
    _ACCESS.log(level, "%d %s %s (%s) %.2fms", status, request.method, request.uri, request.remote_ip, duration,
                extra={"request_id": getattr(handler, "request_id", None), "http": http})

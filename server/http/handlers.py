"""Thin HTTP handlers; BaseHandler is the one place errors become JSON responses."""
import functools
import hmac
import json
import logging
import os
import re

import tornado.web

from server import logs, numbers, views
from server.service import ServiceError
from server.service.reconciliation import parse_day
from server.store import StoreError
from server.wechat import MAX_NOTIFY_BYTES, NotificationRefused, WeChatError

log = logging.getLogger("server.handlers")

OPENAPI_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "openapi.json")
MAX_JSON_BYTES = 16 * 1024
MAX_PAGE = 200
_ADMIN_REFUSED = ("admin token missing or wrong: send `Authorization: Bearer <token>` with the backend's ADMIN_TOKEN "
                  "(run_server.py --simulator prints one at start when ADMIN_TOKEN is unset)")
_HTTP_CODES = {400: "BAD_REQUEST", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "BODY_TOO_LARGE"}


@tornado.web.stream_request_body
class BaseHandler(tornado.web.RequestHandler):
    """Bodies are streamed so an oversized one is refused (413) before it is read.

    An answer sent before the body was read (413, or 405 for an unknown method) says
    `Connection: close`: Tornado closes such a connection rather than read the rest."""
    max_body = MAX_JSON_BYTES
    order_in_path = False   # the path's argument is an out_trade_no: the request's lines carry it

    def initialize(self, service):
        self.service = service

    @functools.cached_property
    def request_id(self):
        return logs.request_id(self.request.headers.get(logs.REQUEST_ID_HEADER))

    def set_default_headers(self):
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header(logs.REQUEST_ID_HEADER, self.request_id)   # error answers too (they clear the headers)

    def prepare(self):
        logs.bind_request(self.request_id)   # this request's task: the service's and WeChat client's lines too
        if self.order_in_path:
            logs.bind_order(self.path_args[0])
        self.application.inflight.add(self)  # for a graceful stop: see App.stop (server/app.py)
        self._chunks, self._received = [], 0
        declared = _declared_length(self.request.headers)
        if declared is not None and declared > self.max_body:
            raise ServiceError(413, "BODY_TOO_LARGE", "request body over %d bytes" % self.max_body)
        # A malformed Content-Length, or one beside Transfer-Encoding, is refused by Tornado's
        # parser (400, given the API's shape by server/http/server.py). A chunked body has no
        # length: it is counted as it arrives, so an oversized one is a 413 too; the
        # connection's own cap is lifted so that it cannot answer first with a bare 400.
        if "Transfer-Encoding" in self.request.headers:
            self.request.connection.set_max_body_size(1 << 40)

    def data_received(self, chunk):
        if self._finished:
            return
        self._received += len(chunk)
        if self._received > self.max_body:
            error = ServiceError(413, "BODY_TOO_LARGE", "request body over %d bytes" % self.max_body)
            self.send_error(413, exc_info=(ServiceError, error, None))
            return
        self._chunks.append(chunk)

    @property
    def body(self):
        return b"".join(self._chunks)

    def finish(self, chunk=None):
        if not self._body_read() and _has_body(self.request.headers):
            self.set_header("Connection", "close")
        return super().finish(chunk)

    def _body_read(self):
        # stream_request_body: Tornado resolves this future when the whole body has arrived
        future = getattr(self.request, "_body_future", None)
        return future is None or future.done()

    def on_finish(self):
        self.application.inflight.discard(self)

    def on_connection_close(self):
        self.application.inflight.discard(self)
        super().on_connection_close()  # fails the pending body read, which frees the request

    def json_body(self):
        """The request body as a JSON object; 400 otherwise."""
        try:
            data = json.loads(self.body.decode("utf-8")) if self.body else {}
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise ServiceError(400, "INVALID_JSON", "the body must be a UTF-8 JSON object") from None
        if not isinstance(data, dict):
            raise ServiceError(400, "INVALID_JSON", "the body must be a JSON object")
        return data

    def bearer_token(self):
        """The token of `Authorization: Bearer <token>`; "" for another scheme (never valid),
        None without the header."""
        if "Authorization" not in self.request.headers:
            return None
        scheme, _, token = self.request.headers["Authorization"].partition(" ")
        return token.strip() if scheme.lower() == "bearer" else ""

    def flag(self, name):
        """A yes/no query argument (?refresh=1)."""
        return self.get_query_argument(name, "0") not in ("0", "", "false")

    async def openid(self):
        """The caller's openid from its session token."""
        return await self.service.authenticate(self.bearer_token())

    def page_limit(self, default):
        """?limit= of a list: 1 to MAX_PAGE; 400 INVALID_LIMIT otherwise."""
        try:
            return numbers.parse_whole(self.get_query_argument("limit", str(default)), 1, MAX_PAGE)
        except numbers.NumberRefused:
            raise ServiceError(400, "INVALID_LIMIT", "limit must be a whole number from 1 to %d" % MAX_PAGE) from None

    def send_json(self, status, data):
        self.set_status(status)
        self.finish(json.dumps(data, ensure_ascii=False))

    def write_error(self, status_code, **kwargs):
        exc = kwargs.get("exc_info", (None, None))[1]
        status, error = _error_shape(status_code, exc)
        if status == 405:   # tornado's own 405 says nothing; name what was refused and where the list is
            error["message"] = "%s is not allowed on %s: GET /openapi.json lists each path's methods" % (
                self.request.method, self.request.path)
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps({"error": error}, ensure_ascii=False))

    def log_exception(self, typ, value, tb):
        if isinstance(value, ServiceError):
            return
        if isinstance(value, tornado.web.HTTPError) and value.status_code < 500:
            return   # the access log's line for the answer says it (404, 405): one line per request
        if isinstance(value, StoreError) and value.__cause__ is not None:
            return   # the database failed: the store logs the outage once, not once per request
        if isinstance(value, (WeChatError, StoreError)):
            log.warning("%s %s: %s: %s", self.request.method, self.request.path, type(value).__name__, value)
            return
        super().log_exception(typ, value, tb)


def _declared_length(headers):
    """Content-Length as a number; None when absent or malformed (Tornado refuses those). Digits
    too many to read declare a body over any limit (infinity): that is a 413, as a long number is."""
    value = headers.get("Content-Length")
    pieces = set(re.split(r",[ \t]*", value)) if value is not None else ()
    if len(pieces) != 1:
        return None
    try:
        return numbers.parse_whole(pieces.pop())
    except numbers.NumberRefused as exc:
        return float("inf") if exc.too_large else None


def _has_body(headers):
    return "Transfer-Encoding" in headers or headers.get("Content-Length", "0").strip() not in ("0", "")


def _error_shape(status_code, exc):
    """(status, {"code", "message", "wechat_code"?}) for any exception; never a traceback."""
    if isinstance(exc, ServiceError):
        status, error = exc.status, dict(exc.extra, code=exc.code, message=exc.message)
        wechat_code = exc.wechat_code
    elif isinstance(exc, WeChatError):
        status, error = exc.status, {"code": exc.code, "message": "WeChat: %s" % exc}
        wechat_code = exc.wechat_code
    elif isinstance(exc, StoreError):
        status, error, wechat_code = 503, {"code": "STORE_UNAVAILABLE", "message": "storage unavailable"}, None
    elif isinstance(exc, tornado.web.HTTPError) and status_code < 500:
        status, wechat_code = status_code, None
        error = {"code": _HTTP_CODES.get(status_code, "HTTP_%d" % status_code),
                 "message": exc.log_message or "request refused"}
    else:
        status, error, wechat_code = 500, {"code": "INTERNAL", "message": "internal error"}, None
    if wechat_code is not None:
        error["wechat_code"] = wechat_code
    return status, error


class LoginHandler(BaseHandler):
    async def post(self):
        self.send_json(200, await self.service.login(self.json_body().get("code")))


class ProductsHandler(BaseHandler):
    def get(self):
        self.send_json(200, views.products(self.service.catalog.all()))


class OrdersHandler(BaseHandler):
    async def post(self):
        body = self.json_body()
        openid = await self.service.caller(self.bearer_token(), body.get("code"))
        order, payment = await self.service.create_order(
            openid, body.get("product_id"), body.get("quantity", 1), self.request.headers.get("Idempotency-Key"))
        self.send_json(201, views.order_with_payment(order, payment))

    async def get(self):
        """The caller's orders, newest first, a page at a time."""
        orders, cursor = await self.service.list_orders(await self.openid(), self.page_limit(20),
                                                        self.get_query_argument("before", None))
        shown = [views.order(o, await self.service.refunds_to_show(o)) for o in orders]
        self.send_json(200, views.page(shown, cursor, "orders"))


class OrderHandler(BaseHandler):
    order_in_path = True

    async def get(self, out_trade_no):
        order = await self.service.get_order(await self.openid(), out_trade_no, self.flag("refresh"))
        self.send_json(200, views.order(order, await self.service.refunds_to_show(order)))


class PaymentHandler(BaseHandler):
    order_in_path = True

    async def post(self, out_trade_no):
        order, payment = await self.service.repay(await self.openid(), out_trade_no)
        self.send_json(200, views.order_with_payment(order, payment))


class CloseHandler(BaseHandler):
    order_in_path = True

    async def post(self, out_trade_no):
        self.send_json(200, views.order(await self.service.close(await self.openid(), out_trade_no)))


class HealthHandler(BaseHandler):
    async def get(self):
        await self.service.store.ping()
        self.send_json(200, {"status": "ok"})


class OpenAPIHandler(BaseHandler):
    """GET /openapi.json: the API's OpenAPI 3.1 document, as checked in (no auth)."""
    document = None  # the file's bytes, read on first use

    def get(self):
        if OpenAPIHandler.document is None:
            with open(OPENAPI_FILE, "rb") as f:
                OpenAPIHandler.document = f.read()
        self.set_status(200)
        self.finish(OpenAPIHandler.document)


class NotFoundHandler(BaseHandler):
    """Unknown paths. The body (within the limit) is read and dropped before the 404, so the
    connection stays usable for the client's next request."""

    def not_found(self, *args):
        raise tornado.web.HTTPError(404, "no such endpoint")

    get = post = put = patch = delete = head = options = not_found


class AdminHandler(BaseHandler):
    """`Authorization: Bearer <ADMIN_TOKEN>`; without ADMIN_TOKEN configured, always 401."""

    def require_admin(self):
        expected = self.service.config.admin_token
        token = self.bearer_token()
        if not (expected and token and hmac.compare_digest(token.encode(), expected.encode())):
            raise ServiceError(401, "UNAUTHORIZED", _ADMIN_REFUSED)


class AdminOrderHandler(AdminHandler):
    order_in_path = True

    async def get(self, out_trade_no):
        self.require_admin()
        order, refunds = await self.service.admin_order(out_trade_no, self.flag("refresh"))
        self.send_json(200, views.admin_order(order, refunds))


class AdminRefundsHandler(AdminHandler):
    order_in_path = True

    async def post(self, out_trade_no):
        self.require_admin()
        body = self.json_body()
        refund = await self.service.refund(out_trade_no, body.get("refund_fee"), body.get("reason"),
                                           body.get("out_refund_no"), self.request.headers.get("Idempotency-Key"))
        self.send_json(202, views.refund(refund))


class AdminRefundListHandler(AdminHandler):
    """GET /admin/refunds[?status=PENDING,PROCESSING&limit=50&before=<cursor>]."""

    async def get(self):
        self.require_admin()
        statuses = [s for value in self.get_query_arguments("status") for s in value.split(",") if s]
        refunds, cursor = await self.service.open_refunds(statuses, self.page_limit(50),
                                                          self.get_query_argument("before", None))
        self.send_json(200, views.page([views.refund(r, with_created_at=True) for r in refunds], cursor, "refunds"))


class AdminReconciliationsHandler(AdminHandler):
    """POST /admin/reconciliations {"date"}: reconcile the day now; the report."""

    async def post(self):
        self.require_admin()
        day = parse_day(self.json_body().get("date"))
        self.send_json(200, await self.service.reconciliation.run(day))


class AdminReconciliationHandler(AdminHandler):
    """GET /admin/reconciliations/<date>: the day's stored report."""

    async def get(self, date):
        self.require_admin()
        self.send_json(200, await self.service.reconciliation.stored(parse_day(date)))


class PayNotifyHandler(BaseHandler):
    """WeChat's payment notification: XML in, XML out."""
    max_body = MAX_NOTIFY_BYTES

    async def post(self):
        self.send_xml(await self.service.handle_notify(self.body))

    def send_xml(self, reply):
        self.set_header("Content-Type", "text/xml; charset=utf-8")
        self.finish(reply)

    def write_error(self, status_code, **kwargs):
        # WeChat only reads return_code; anything but SUCCESS makes it retry later
        exc = kwargs.get("exc_info", (None, None))[1]
        self.set_status(_error_shape(status_code, exc)[0])
        self.set_header("Content-Type", "text/xml; charset=utf-8")
        self.finish(self.service.wechat.v2_reply("temporarily unable to process"))


class RefundNotifyHandler(PayNotifyHandler):
    """WeChat's refund notification: encrypted req_info, no sign."""

    async def post(self):
        self.send_xml(await self.service.handle_refund_notify(self.body))


class V3NotifyHandler(BaseHandler):
    """WeChat Pay v3 notifications, payments and refunds alike (either path): JSON in; 200
    {"code": "SUCCESS"} once applied and committed, else 4xx/5xx {"code": "FAIL", "message"}
    (WeChat's shape), after which WeChat delivers it again later."""
    max_body = MAX_NOTIFY_BYTES

    async def post(self):
        try:
            await self.service.handle_notify_v3(self.request.headers, self.body)
        except NotificationRefused as exc:
            raise ServiceError(exc.status, "FAIL", str(exc)) from None
        self.send_json(200, {"code": "SUCCESS", "message": "OK"})

    def write_error(self, status_code, **kwargs):
        exc = kwargs.get("exc_info", (None, None))[1]
        status, error = _error_shape(status_code, exc)
        message = error["message"] if status < 500 else "temporarily unable to process"
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps({"code": "FAIL", "message": message}, ensure_ascii=False))

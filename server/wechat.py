"""Async WeChat client: code2Session and the Pay v2 calls, every pay answer verified.

Exceptions (all subclasses of WeChatError; `status` and `code` say how the backend's API
reports them):

- UpstreamTimeout (504 UPSTREAM_TIMEOUT): no answer within the configured timeout.
- UpstreamError (502 UPSTREAM_ERROR): connection refused or reset, a non-200 status, a
  body that is not WeChat's XML/JSON, a return_code FAIL, a missing or wrong signature on
  an answer, an answer for another appid/mch_id, or SYSTEMERROR / errcode -1 after retries.
- WeChatRefused (502 by default, carries `wechat_code`): WeChat answered, correctly signed,
  and said no (err_code such as ORDERPAID, or a login errcode such as 40029). The service
  decides what a given refusal means for its caller.

- NotificationRefused (not a WeChatError: WeChat called us): a v3 notification that is not
  to be believed or not for us; `status` is the HTTP status to answer it with (401 when its
  signature, serial, timestamp or nonce fails, 400 when its content does).

Transport: server/upstream.py, a keep-alive connection pool on asyncio streams (see there
why not a library client).

The pay client interface: the service talks to one interface, implemented for API v2 by
WeChatClient here and for API v3 by server/wechat3.py's WeChatClientV3 (app.py picks one
by WECHAT_PAY_VERSION). Results use the domain's names (WeChat v2's), whatever the wire:

- `await start()`, `close()`; `attempts` (calls made per request at most).
- `await code2session(code)` -> {"openid", "session_key", "unionid"?}.
- `await prepay(order)` -> the prepay_id of a domain Order (JSAPI, its payer, its amount).
- `payment_params(prepay_id, sign_type, timestamp)` -> wx.requestPayment's five fields.
- `await order_query(out_trade_no)` -> {"trade_state", "transaction_id", "total_fee" (fen,
  as a string), "time_end" (yyyyMMddHHmmss, Beijing), ...}; WeChatRefused("ORDERNOTEXIST").
- `await close_order(out_trade_no)`; WeChatRefused ORDERPAID / ORDERCLOSED / ORDERNOTEXIST.
- `await refund(out_refund_no, refund_fee, total_fee, out_trade_no=, refund_desc=,
  notify_url=)` -> {"refund_id", ...}: accepted, not done.
- `await refund_query(out_refund_no)` -> [{"out_refund_no", "refund_id", "refund_fee" (int),
  "refund_status" (a domain refund state), "success_time"}], [] when WeChat has none.
- `await open_notification(headers, body)` -> Notification (v3); NotificationRefused.
"""
import asyncio
import collections
import json
import logging
import urllib.parse

from server import httpserver, numbers, upstream, wxpay

log = logging.getLogger("server.wechat")


class WeChatError(Exception):
    status = 502
    code = "UPSTREAM_ERROR"
    wechat_code = None


class UpstreamTimeout(WeChatError):
    status = 504
    code = "UPSTREAM_TIMEOUT"


class UpstreamError(WeChatError):
    pass


class WeChatRefused(WeChatError):
    def __init__(self, wechat_code, message):
        super().__init__(message)
        self.wechat_code = wechat_code


class NotificationRefused(Exception):
    """A notification not to be believed or not for us: answer `status`, store nothing."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


# A v3 notification, opened: `kind` is "transaction" or "refund", `fields` its resource in
# the domain's names (as order_query's answer, or as a v2 refund notification's req_info).
Notification = collections.namedtuple("Notification", "id event_type kind fields")


_RETRY_PAY = "SYSTEMERROR"
# Answers that may come without appid/mch_id: a real, correctly signed closeorder answer was
# captured without them (the docs list them, but closing needs nothing from them). Every
# other pay answer names both, and one that does not is not trusted.
_MAY_OMIT_IDS = {"closeorder"}
_HEADERS = {"Content-Type": "text/xml; charset=utf-8", "User-Agent": "wxpay-tornado"}
_RETRY_LOGIN = -1
MAX_LISTED = 50   # refunds WeChat takes of one order, so refundquery lists at most that many


class BaseClient:
    """What both API versions share: the connection pool, code2session, retries."""

    def __init__(self, config, attempts=3, backoff=0.2):
        self.config = config
        self.attempts = attempts
        self.backoff = backoff
        per_host = config.connections_per_host or httpserver.default_connections_per_host()
        self.http = upstream.Pool(connect_timeout=min(config.timeout, 5.0), max_per_host=per_host,
                                  proxy=upstream.Proxy(config.proxy_url or None))
        self.tls = upstream.client_ssl_context(config.ca_file)
        self.tls_with_cert = (upstream.client_ssl_context(config.ca_file, config.cert_file, config.key_file)
                              if config.cert_file else self.tls)

    async def start(self):
        """Background work the client needs (none for v2)."""

    def close(self):
        self.http.close()

    # -- login -------------------------------------------------------------------
    async def code2session(self, code):
        """{'openid', 'session_key', 'unionid'?} for a wx.login code."""
        query = urllib.parse.urlencode({
            "appid": self.config.appid, "secret": self.config.app_secret,
            "js_code": code, "grant_type": "authorization_code"})
        url = "%s/sns/jscode2session?%s" % (self.config.login_base_url.rstrip("/"), query)
        return await self._with_retries(lambda: self._login_once(url), "jscode2session")

    async def _login_once(self, url):
        body = await self._fetch("GET", url, None, "jscode2session")
        try:
            answer = json.loads(body)
        except ValueError:
            raise UpstreamError("jscode2session answered something that is not JSON") from None
        if not isinstance(answer, dict):
            raise UpstreamError("jscode2session answered unexpected JSON")
        errcode = answer.get("errcode", 0)
        if errcode == _RETRY_LOGIN:
            return _Retry(WeChatRefused(errcode, "WeChat system busy (errcode -1)"))
        if errcode not in (0, None):
            raise WeChatRefused(errcode, "jscode2session errcode %s" % errcode)
        if not answer.get("openid") or not answer.get("session_key"):
            raise UpstreamError("jscode2session answer lacks openid or session_key")
        return answer

    # -- transport ---------------------------------------------------------------
    async def _with_retries(self, once, name):
        """Call once() up to `attempts` times while it asks for a retry (SYSTEMERROR, -1)."""
        for attempt in range(1, self.attempts + 1):
            result = await once()
            if not isinstance(result, _Retry):
                return result
            log.warning("%s: WeChat asked for a retry (%s), attempt %d/%d",
                        name, result.error.wechat_code, attempt, self.attempts)
            if attempt < self.attempts:
                await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
        raise UpstreamError("%s still failing after %d attempts (%s)" % (
            name, self.attempts, result.error.wechat_code))

    async def _fetch(self, method, url, body, name, client_cert=False):
        tls = self.tls_with_cert if client_cert else self.tls
        try:
            status, answer = await self.http.fetch(method, url, body, _HEADERS, self.config.timeout, tls)
        except asyncio.TimeoutError:
            raise UpstreamTimeout("%s: WeChat did not answer in time" % name) from None
        except (OSError, upstream.BadResponse) as exc:
            # the message names neither URL nor query: the jscode2session URL carries the AppSecret
            raise UpstreamError("%s: cannot reach WeChat (%s)" % (name, type(exc).__name__)) from None
        if status != 200:
            raise UpstreamError("%s answered HTTP %d" % (name, status))
        return answer


class WeChatClient(BaseClient):
    """WeChat Pay API v2: XML signed with the API key (MD5 or HMAC-SHA256)."""

    # -- the pay client interface (see the module docstring) ------------------------
    async def prepay(self, order):
        """unifiedorder for a stored order, signed with the order's own sign type (its
        notification will be verified with it)."""
        answer = await self.unified_order(
            sign_type=_v2_sign_type(order.sign_type, self.config), body=order.body,
            out_trade_no=order.out_trade_no, total_fee=str(order.total_fee),
            spbill_create_ip=self.config.spbill_create_ip, notify_url=self.config.notify_url,
            trade_type="JSAPI", openid=order.openid)
        return answer["prepay_id"]

    def payment_params(self, prepay_id, sign_type, timestamp):
        return wxpay.pay_sign_params(self.config.appid, prepay_id, self.config.api_key,
                                     _v2_sign_type(sign_type, self.config), timestamp, wxpay.nonce())

    async def open_notification(self, headers, body):
        raise NotificationRefused(404, "this backend is configured for WeChat Pay API v2 (WECHAT_PAY_VERSION)")

    # -- pay ---------------------------------------------------------------------
    async def unified_order(self, sign_type=None, **fields):
        """The answer, whose prepay_id is there (UpstreamError otherwise)."""
        fields.setdefault("trade_type", "JSAPI")
        answer = await self._pay("/pay/unifiedorder", fields, sign_type=sign_type)
        if not answer.get("prepay_id"):
            raise UpstreamError("unifiedorder succeeded without a prepay_id")
        return answer

    async def order_query(self, out_trade_no):
        return await self._pay("/pay/orderquery", {"out_trade_no": out_trade_no})

    async def close_order(self, out_trade_no):
        return await self._pay("/pay/closeorder", {"out_trade_no": out_trade_no})

    async def refund(self, out_refund_no, refund_fee, total_fee, **fields):
        """secapi/pay/refund with the merchant's client certificate (amounts in fen). The
        answer means accepted, not done; it must be for this out_refund_no and amount."""
        answer = await self._pay("/secapi/pay/refund", dict(
            fields, out_refund_no=out_refund_no, refund_fee=str(refund_fee), total_fee=str(total_fee)),
            client_cert=True)
        if answer.get("out_refund_no") != out_refund_no or answer.get("refund_fee") != str(refund_fee):
            raise UpstreamError("refund answer does not match the request")
        return answer

    async def refund_query(self, out_refund_no):
        """The refunds WeChat lists for an out_refund_no: [{"out_refund_no", "refund_id",
        "refund_fee" (int fen), "refund_status", "success_time"}]; [] when it has none
        (REFUNDNOTEXIST). WeChat numbers the fields of each (out_refund_no_$n, ...)."""
        try:
            answer = await self._pay("/pay/refundquery", {"out_refund_no": out_refund_no})
        except WeChatRefused as exc:
            if exc.wechat_code == "REFUNDNOTEXIST":
                return []
            raise
        return [_numbered_refund(answer, n) for n in range(_refund_count(answer.get("refund_count")))]

    async def _pay(self, path, fields, client_cert=False, sign_type=None):
        """Sign (with sign_type, default the configured one), send, verify the answer."""
        name = path.rsplit("/", 1)[-1]
        sign_type = sign_type or self.config.sign_type
        params = {"appid": self.config.appid, "mch_id": self.config.mch_id, **fields}
        if sign_type != wxpay.MD5:
            params["sign_type"] = sign_type
        url = self.config.pay_base_url.rstrip("/") + path

        async def once():
            # a fresh nonce per attempt; the business fields stay identical, so a retried
            # unifiedorder is the same order at WeChat
            params["nonce_str"] = wxpay.nonce()
            body = wxpay.signed_xml(params, self.config.api_key, sign_type)
            answer = await self._fetch("POST", url, body, name, client_cert)
            return self._check_pay_answer(name, answer, sign_type)
        return await self._with_retries(once, name)

    def _check_pay_answer(self, name, body, sign_type):
        try:
            answer = wxpay.from_xml(body)
        except wxpay.XMLError as exc:
            raise UpstreamError("%s answered invalid XML: %s" % (name, exc)) from None
        if answer.get("return_code") != "SUCCESS":
            raise UpstreamError("%s return_code=%r: %r" % (
                name, answer.get("return_code", "")[:16], answer.get("return_msg", "")[:128]))
        if not wxpay.verify(answer, self.config.api_key, sign_type):
            raise UpstreamError("%s answer is unsigned or wrongly signed; not trusted" % name)
        for field, ours in (("appid", self.config.appid), ("mch_id", self.config.mch_id)):
            if field in answer and answer[field] != ours:
                raise UpstreamError("%s answer is for another appid/mch_id" % name)
            if field not in answer and name not in _MAY_OMIT_IDS:
                raise UpstreamError("%s answer lacks %s" % (name, field))
        if answer.get("result_code") != "SUCCESS":
            err = WeChatRefused(answer.get("err_code", "FAIL"), answer.get("err_code_des", ""))
            if err.wechat_code == _RETRY_PAY:
                return _Retry(err)
            raise err
        return answer

def _v2_sign_type(sign_type, config):
    """An order's sign type for a v2 call: an order made under v3 (RSA) is signed with the
    configured v2 sign type."""
    return sign_type if sign_type in wxpay.SIGN_TYPES else config.sign_type


def _refund_count(value):
    """refundquery's refund_count: WeChat takes at most MAX_LISTED refunds of an order."""
    try:
        return numbers.parse_whole(value, 0, MAX_LISTED)
    except numbers.NumberRefused:
        raise UpstreamError("refundquery: refund_count %r is not a count of refunds" % str(value)[:20]) from None


def _numbered_refund(answer, n):
    try:
        fee = numbers.parse_whole(answer.get("refund_fee_%d" % n, ""))
    except numbers.NumberRefused:
        fee = None
    return {"out_refund_no": answer.get("out_refund_no_%d" % n), "refund_id": answer.get("refund_id_%d" % n),
            "refund_fee": fee,
            "refund_status": answer.get("refund_status_%d" % n),
            "success_time": answer.get("refund_success_time_%d" % n)}


class _Retry:
    def __init__(self, error):
        self.error = error

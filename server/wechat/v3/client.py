"""Async WeChat Pay API v3 client (JSAPI): the PayClient (server/wechat/__init__.py) over
v3's JSON, every answer and notification verified (wire.py) before it is believed.

Requests are signed with the merchant's RSA key (Authorization). Answers: a 2xx must carry
a valid signature by a key we trust, within 5 minutes of now, or it is UpstreamError. An
error answer ({"code", "message"} with a 4xx/5xx) is a definite refusal (WeChatRefused,
on which the service may change state: a refund becomes FAILED) only when it is signed and
the signature verifies; 401 SIGN_ERROR (WeChat does not sign answers to requests whose
signature failed), 429 FREQUENCY_LIMITED, unsigned errors and other 5xx are UpstreamError
(nothing is concluded); 500 SYSTEM_ERROR is retried like v2's SYSTEMERROR.

Keys WeChat signs with (keys.py's WeChatPayKeys): the WeChat Pay public key, named by its id
PUB_KEY_ID_..., and/or the platform certificates, named by serial: fetched from
GET /v3/certificates (decrypted with the APIv3 key, the answer verified with them), kept in
WECHAT_PLATFORM_CERT_DIR, refreshed every 12 hours and, at most once a minute, when an
unknown serial arrives. Both at once while WeChat moves a merchant from certificates to the
public key.

Mapped onto the domain (its names are WeChat v2's): amount.total -> total_fee (int fen),
success_time (RFC 3339) -> time_end yyyyMMddHHmmss Beijing for orders and
"yyyy-MM-dd HH:mm:ss" for refunds, mchid -> mch_id, refund status SUCCESS / CLOSED /
PROCESSING / ABNORMAL -> SUCCESS / REFUNDCLOSE / PROCESSING / CHANGE, and the few error
codes the service acts on (ORDER_NOT_EXIST -> ORDERNOTEXIST, ORDER_CLOSED -> ORDERCLOSED,
...).
"""
import asyncio
import datetime
import json
import logging
import time
from urllib.parse import quote, urlsplit

from server import metrics
from server.domain import BEIJING, CHANGE, PREPAY_TTL, REFUNDCLOSE, SUCCESS
from server.wechat import (PAYMENT, REFUND_RESULT, Notification, NotificationRefused, UpstreamError,
                           UpstreamTimeout, WeChatRefused, upstream)
from server.wechat import guidance
from server.wechat.base import BaseClient
from server.wechat.retry import Retry
from server.wechat.v3 import bills, resources, wire
from server.wechat.v3.keys import ReplayGuard, WeChatPayKeys

log = logging.getLogger("server.wechat.v3")

ORDER_TTL_MARGIN = 60            # an order is not given a prepay_id in the last minute of PREPAY_TTL
CERT_REFRESH_EVERY = 12 * 3600   # platform certificates are fetched again this often
CERT_REFRESH_GAP = 60            # ... and for an unknown serial at most this often
CERT_RETRY_MAX = 60              # a failed fetch is tried again after 1, 2, 4 ... up to this

_CODES = {   # v3 codes the service acts on -> the names it knows (WeChat's v2 ones)
    "ORDER_NOT_EXIST": "ORDERNOTEXIST", "ORDERNOTEXIST": "ORDERNOTEXIST",
    "ORDER_CLOSED": "ORDERCLOSED", "ORDERCLOSED": "ORDERCLOSED",
    "ORDER_PAID": "ORDERPAID", "ORDERPAID": "ORDERPAID",
    "SYSTEM_ERROR": "SYSTEMERROR", "SYSTEMERROR": "SYSTEMERROR",
}
SIGN_FIX = ("WECHAT_MCH_PRIVATE_KEY_FILE must be the key of the merchant API certificate whose serial is "
            "WECHAT_MCH_SERIAL_NO")
_NOT_CONCLUSIVE = {"SIGN_ERROR", "FREQUENCY_LIMITED"}
_REFUND_EVENTS = {"REFUND.SUCCESS": SUCCESS, "REFUND.CLOSED": REFUNDCLOSE, "REFUND.ABNORMAL": CHANGE}
_PATH_SAFE = "-_.~*@"   # out_refund_no may hold [0-9A-Za-z_-|*@]; '|' is percent-encoded (and signed so)


class WeChatClientV3(BaseClient):
    """WeChat Pay API v3, JSAPI (Mini Program) payments."""

    def __init__(self, config, attempts=3, backoff=0.2, clock=time.time, monotonic=time.monotonic):
        super().__init__(config, attempts, backoff)
        self.clock, self.monotonic = clock, monotonic
        self.private_key = wire.load_private_key(_read(config.mch_private_key_file))
        public_key = wire.load_public_key(_read(config.pay_public_key_file)) if config.pay_public_key_file else None
        self.keys = WeChatPayKeys(public_key, config.pay_public_key_id, config.platform_cert_dir, clock)
        self.keys.load_directory()
        self.replays = ReplayGuard(clock)
        self.base_url = config.pay_base_url.rstrip("/")
        self._headers = {"Accept": "application/json", "User-Agent": "wxpay-tornado"}
        if config.pay_public_key_id:
            self._headers["Wechatpay-Serial"] = config.pay_public_key_id
        self._refresh_lock = asyncio.Lock()
        self._last_refresh = None
        self._refresher = None

    async def start(self):
        """Platform-certificate mode: fetch now (in the background) and every 12 hours."""
        if self.keys.uses_certificates and self._refresher is None:
            self._refresher = asyncio.create_task(self._refresh_forever())

    def close(self):
        if self._refresher is not None:
            self._refresher.cancel()
            self._refresher = None
        super().close()

    # -- the PayClient (server/wechat/__init__.py) ------------------------------------
    async def prepay(self, order):
        expires = order.created_at + PREPAY_TTL
        if expires - self.clock() < ORDER_TTL_MARGIN:
            # answered here: WeChat refuses an order past its time_expire
            raise WeChatRefused("ORDER_EXPIRED", "the order's time_expire (%s) has passed" % _rfc3339(expires))
        answer = await self._call("POST", "/v3/pay/transactions/jsapi", "jsapi", {
            "appid": self.config.appid, "mchid": self.config.mch_id, "description": order.body,
            "out_trade_no": order.out_trade_no, "time_expire": _rfc3339(expires),
            "notify_url": self.config.notify_url,
            "amount": {"total": order.total_fee, "currency": "CNY"}, "payer": {"openid": order.openid}})
        prepay_id = answer.get("prepay_id")
        if not isinstance(prepay_id, str) or not prepay_id:
            raise UpstreamError("jsapi succeeded without a prepay_id")
        return prepay_id

    def payment_params(self, prepay_id, order, timestamp):
        return wire.pay_sign_params(self.config.appid, prepay_id, self.private_key, timestamp, wire.nonce())

    async def order_query(self, out_trade_no):
        answer = await self._call("GET", "/v3/pay/transactions/out-trade-no/%s?mchid=%s" % (
            _path(out_trade_no), quote(self.config.mch_id)), "query")
        trade = resources.trade(answer)
        if trade["out_trade_no"] != out_trade_no:
            raise UpstreamError("query answer is for another out_trade_no")
        if (trade["appid"], trade["mch_id"]) != (self.config.appid, self.config.mch_id):
            raise UpstreamError("query answer is for another appid/mchid")
        return trade

    async def close_order(self, out_trade_no):
        await self._call("POST", "/v3/pay/transactions/out-trade-no/%s/close" % _path(out_trade_no), "close",
                         {"mchid": self.config.mch_id})

    async def refund(self, out_refund_no, refund_fee, total_fee, out_trade_no=None, refund_desc=None,
                     notify_url=None, **unused):
        request = {"out_trade_no": out_trade_no, "out_refund_no": out_refund_no,
                   "amount": {"refund": refund_fee, "total": total_fee, "currency": "CNY"}}
        if refund_desc:
            request["reason"] = refund_desc
        if notify_url:
            request["notify_url"] = notify_url
        answer = resources.refund(await self._call("POST", "/v3/refund/domestic/refunds", "refunds", request), "status")
        if answer["out_refund_no"] != out_refund_no or answer["refund_fee"] != refund_fee:
            raise UpstreamError("refund answer does not match the request")
        return answer

    async def refund_query(self, out_refund_no):
        try:
            answer = await self._call("GET", "/v3/refund/domestic/refunds/%s" % _path(out_refund_no), "refund query")
        except WeChatRefused as exc:
            if exc.wechat_code == "RESOURCE_NOT_EXISTS":
                return []
            raise
        found = resources.refund(answer, "status")
        if found["out_refund_no"] != out_refund_no:
            raise UpstreamError("refund query answer is for another out_refund_no")
        return [{"out_refund_no": found["out_refund_no"], "refund_id": found["refund_id"],
                 "refund_fee": found["refund_fee"], "refund_status": found["refund_status"],
                 "success_time": found["success_time"]}]

    async def download_bill(self, day):
        """The day's trade bill (ALL) as [BillRow] (bills.py: tradebill, then its file)."""
        return await bills.download_bill(self, day)

    async def open_notification(self, headers, body, replay=False):
        """Verify (serial, signature, timestamp window: before anything else), refuse
        probes and replays, parse, decrypt. Returns a Notification; NotificationRefused.
        replay: the notification log's stored copy, run again by an admin: no timestamp window
        and no nonce cache (they would refuse the copy as the replay it is meant to be)."""
        pairs = headers.get_all() if hasattr(headers, "get_all") else headers.items()
        try:
            signed = wire.signed_headers(pairs)
            await self._believe(signed, body, window=float("inf") if replay else wire.TIMESTAMP_WINDOW)
        except wire.SignatureError as exc:
            raise NotificationRefused(401, "signature: %s" % exc) from None
        if not replay and self.replays.seen(signed["wechatpay-nonce"]):
            raise NotificationRefused(401, "replayed: nonce %s was seen before" % signed["wechatpay-nonce"][:64])
        event = _json_object(body)
        if event is None or not isinstance(event.get("event_type"), str):
            raise NotificationRefused(400, "the body is not a notification")
        kind = {"TRANSACTION": PAYMENT, "REFUND": REFUND_RESULT}.get(event["event_type"].partition(".")[0])
        if kind is None:
            return Notification(id=str(event.get("id"))[:64], event_type=event["event_type"])
        try:
            resource = wire.decrypt_resource(event.get("resource"), self.config.apiv3_key)
        except wire.DecryptError as exc:
            raise NotificationRefused(400, "resource: %s" % exc, str(event.get("id"))) from None
        opened = self._payment if kind == PAYMENT else self._refund_result
        return opened(str(event.get("id"))[:64], event["event_type"], resource)

    def _payment(self, id, event_type, resource):
        fields = resources.trade(resource)
        if fields["appid"] != self.config.appid or fields["mch_id"] != self.config.mch_id:
            raise NotificationRefused(400, "appid or mchid does not match", id)
        if fields["total_fee"] is None:
            # whatever trade_state it claims: a notification without a readable amount is not WeChat's word
            raise NotificationRefused(400, "amount.total is missing or not in CNY fen", id)
        return Notification(kind=PAYMENT, id=id, event_type=event_type, out_trade_no=fields["out_trade_no"],
                            transaction_id=fields["transaction_id"], trade_state=fields["trade_state"],
                            total_fee=fields["total_fee"], time_end=fields["time_end"])

    def _refund_result(self, id, event_type, resource):
        fields = resources.refund(resource, "refund_status")
        if fields["mch_id"] != self.config.mch_id:
            raise NotificationRefused(400, "mchid does not match", id)
        if _REFUND_EVENTS.get(event_type) != fields["refund_status"]:
            raise NotificationRefused(400, "event_type %s does not match the refund's status" % event_type[:32], id)
        return Notification(kind=REFUND_RESULT, id=id, event_type=event_type, out_trade_no=fields["out_trade_no"],
                            out_refund_no=fields["out_refund_no"], refund_id=fields["refund_id"],
                            refund_status=fields["refund_status"], refund_fee=fields["refund_fee"],
                            total_fee=fields["total_fee"], success_time=fields["success_time"])

    # -- signing, sending, believing --------------------------------------------------
    async def _call(self, method, path, name, payload=None):
        url = self.base_url + path
        parts = urlsplit(url)
        signed_url = parts.path + ("?" + parts.query if parts.query else "")
        body = b"" if payload is None else json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()

        async def once():
            headers = dict(self._headers, Authorization=wire.authorization(
                self.config.mch_id, self.config.mch_serial_no, self.private_key, method, signed_url, body,
                int(self.clock())))
            if payload is not None:
                headers["Content-Type"] = "application/json"
            status, fields, answer = await self._send(method, url, body, headers, name)
            return await self._answer(name, status, fields, answer)
        return await self._with_retries(once, name, metrics.v3_endpoint(path))

    async def _send(self, method, url, body, headers, name, max_body=upstream.MAX_BODY_BYTES):
        return await self._exchange(name, url, max_body, self.http.fetch_response(
            method, url, body, headers, self.config.timeout, self.tls(url), max_body))

    async def _answer(self, name, status, fields, body):
        """The answer as a JSON object ({} for a 204), believed; else an exception (or a
        Retry for SYSTEM_ERROR)."""
        success = 200 <= status < 300
        try:
            signed = wire.signed_headers(fields)
            has_signature = bool(signed.get("wechatpay-signature"))
            if success or has_signature:   # a 2xx must be signed; a signed error must verify
                await self._believe(signed, body, answer=True)
        except wire.SignatureError as exc:
            raise UpstreamError("%s answer not trusted: %s" % (name, exc)) from None
        if not success:
            return self._error(name, status, body, has_signature)
        if status == 204 or not body:
            return {}
        answer = _json_object(body)
        if answer is None:
            raise UpstreamError("%s answered something that is not a JSON object" % name)
        return answer

    def _error(self, name, status, body, signed):
        answer = _json_object(body) or {}
        code, message = answer.get("code"), answer.get("message")
        if not isinstance(code, str) or not code:
            raise UpstreamError("%s answered HTTP %d" % (name, status))
        code = _CODES.get(code, code)
        text = "%s: HTTP %d %s: %s" % (name, status, code[:64], str(message or "")[:128])
        if code == "SYSTEMERROR":
            return Retry(_coded(UpstreamError(text), code))
        if status >= 500 or code in _NOT_CONCLUSIVE or not signed:
            # nothing is concluded from these: the caller keeps its state and may try again
            hint = guidance.sign_error_hint(self.base_url, SIGN_FIX) if code == "SIGN_ERROR" else ""
            raise _coded(UpstreamError(text + ("" if signed else " (unsigned)") + hint), code)
        raise WeChatRefused(code, text)

    async def _believe(self, signed, body, answer=False, window=wire.TIMESTAMP_WINDOW):
        """check_signed, fetching the platform certificates (rate-limited) for an unknown serial.
        answer: an API answer, whose Wechatpay-Signature-Type may be absent (see check_signed)."""
        try:
            return wire.check_signed(signed, body, self.keys.key_for, self.clock(), window, type_required=not answer)
        except wire.SignatureError as exc:
            if exc.reason != "unknown_serial" or not await self._refresh_for_unknown_serial():
                raise
        return wire.check_signed(signed, body, self.keys.key_for, self.clock(), window, type_required=not answer)

    # -- platform certificates --------------------------------------------------------
    async def _refresh_for_unknown_serial(self):
        """True when the certificates were fetched again (by us or by a refresh in flight)."""
        if not self.keys.uses_certificates:
            return False
        if self._refresh_lock.locked():
            async with self._refresh_lock:
                return True
        if self._last_refresh is not None and self.monotonic() - self._last_refresh < CERT_REFRESH_GAP:
            return False
        return await self.refresh_certificates("an unknown serial")

    async def refresh_certificates(self, why="scheduled"):
        """GET /v3/certificates: decrypt, verify, trust and keep them. True on success."""
        async with self._refresh_lock:
            self._last_refresh = self.monotonic()
            try:
                certificates = await self._fetch_certificates()
            except (UpstreamError, UpstreamTimeout, WeChatRefused, wire.DecryptError, wire.KeyFileError,
                    wire.SignatureError) as exc:
                log.warning("platform certificates (%s): fetch failed: %s", why, exc)
                return False
            added = self.keys.install(certificates)
            if added:
                log.info("platform certificates (%s): now trusting %s", why, ", ".join(added))
            try:
                await asyncio.to_thread(self.keys.save, certificates)
            except OSError as exc:
                log.warning("platform certificates: cannot keep them in %s: %s", self.keys.cert_dir, exc)
            return True

    async def _fetch_certificates(self):
        url = self.base_url + "/v3/certificates"
        headers = dict(self._headers, Authorization=wire.authorization(
            self.config.mch_id, self.config.mch_serial_no, self.private_key, "GET", urlsplit(url).path, b"",
            int(self.clock())))
        async with metrics.WeChatCall("/v3/certificates"):
            status, fields, body = await self._send("GET", url, b"", headers, "certificates")
        if status != 200:
            raise UpstreamError("certificates answered HTTP %d" % status)
        answer = _json_object(body)
        if answer is None:
            raise UpstreamError("certificates answered something that is not a JSON object")
        certificates = [c for c in wire.decrypt_certificates(answer, self.config.apiv3_key) if self.keys.valid(c)]
        fresh = {c.serial_number: c.public_key() for c in certificates}

        def key_for(serial):   # the answer is signed with one of the certificates it brings
            return fresh.get(wire.serial_number(serial)) or self.keys.key_for(serial)
        wire.check_signed(wire.signed_headers(fields), body, key_for, self.clock(), type_required=False)
        if not certificates:
            raise wire.DecryptError("no certificate in the answer is valid now")
        return certificates

    async def _refresh_forever(self):
        delay = 0
        while True:
            await asyncio.sleep(delay)
            if await self.refresh_certificates():
                delay = CERT_REFRESH_EVERY
            else:
                delay = min(max(2 * delay, 1), CERT_RETRY_MAX)


def _read(path):
    with open(path, "rb") as f:
        return f.read(64 * 1024)


def _coded(error, code):
    error.wechat_code = code
    return error


def _path(value):
    return quote(str(value), safe=_PATH_SAFE)


def _json_object(body):
    try:
        data = json.loads(body.decode("utf-8") if isinstance(body, bytes) else body)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _rfc3339(timestamp):
    return datetime.datetime.fromtimestamp(timestamp, BEIJING).isoformat(timespec="seconds")

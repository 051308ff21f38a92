"""WeChat Pay API v2 client: the PayClient over XML signed with the API key (MD5 or HMAC-SHA256),
every pay answer verified (wire.py)."""

from server import metrics, numbers
from server.domain import PAY_V2
from server.wechat import NotificationRefused, UpstreamError, WeChatRefused, fen, guidance
from server.wechat.base import BaseClient
from server.wechat import bill
from server.wechat.retry import Retry
from server.wechat.v2 import wire

_RETRY_PAY = "SYSTEMERROR"
# Answers that may come without appid/mch_id: a real, correctly signed closeorder answer was
# captured without them (the docs list them, but closing needs nothing from them). Every
# other pay answer names both, and one that does not is not trusted.
_MAY_OMIT_IDS = {"closeorder"}
SIGN_ERROR = "签名错误"   # WeChat's return_msg when the request's sign does not match
SIGN_FIX = "WECHAT_API_KEY must be the merchant API key, not the AppSecret, and WECHAT_SIGN_TYPE the one signed with"
NO_BILL = "20002"   # downloadbill's error_code for No Bill Exist
MAX_LISTED = 50   # refunds WeChat takes of one order, so refundquery lists at most that many


class WeChatClient(BaseClient):
    """WeChat Pay API v2: XML signed with the API key (MD5 or HMAC-SHA256)."""

    # -- the PayClient (server/wechat/__init__.py) ------------------------
    async def prepay(self, order):
        """unifiedorder for a stored order, signed with the order's own sign type (its
        notification will be verified with it)."""
        answer = await self.unified_order(
            sign_type=_v2_sign_type(order, self.config), body=order.body,
            out_trade_no=order.out_trade_no, total_fee=str(order.total_fee),
            spbill_create_ip=self.config.spbill_create_ip, notify_url=self.config.notify_url,
            trade_type="JSAPI", openid=order.openid)
        return answer["prepay_id"]

    def payment_params(self, prepay_id, order, timestamp):
        return wire.pay_sign_params(self.config.appid, prepay_id, self.config.api_key,
                                     _v2_sign_type(order, self.config), timestamp, wire.nonce())

    async def open_notification(self, headers, body, replay=False):
        """A v3 notification: this backend does not take them (open_v2_notification does v2's)."""
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
        """The answer, its total_fee as int fen (None when not WeChat's plain decimal digits)."""
        answer = await self._pay("/pay/orderquery", {"out_trade_no": out_trade_no})
        return dict(answer, total_fee=fen(answer.get("total_fee")))

    async def close_order(self, out_trade_no):
        return await self._pay("/pay/closeorder", {"out_trade_no": out_trade_no})

    async def refund(self, out_refund_no, refund_fee, total_fee, out_trade_no=None, refund_desc=None,
                     notify_url=None):
        """secapi/pay/refund with the merchant's client certificate (amounts in fen). The
        answer means accepted, not done; it must be for this out_refund_no and amount."""
        answer = await self._pay("/secapi/pay/refund", dict(
            out_trade_no=out_trade_no, refund_desc=refund_desc, notify_url=notify_url,
            out_refund_no=out_refund_no, refund_fee=str(refund_fee), total_fee=str(total_fee)), client_cert=True)
        if answer.get("out_refund_no") != out_refund_no or answer.get("refund_fee") != str(refund_fee):
            raise UpstreamError("refund answer does not match the request")
        return dict(answer, refund_fee=refund_fee)

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

    async def download_bill(self, day):
        """The day's trade bill (ALL, gzipped on the wire) as [BillRow]: POST /pay/downloadbill.
        WeChat answers the bill itself, or an (unsigned) XML error: No Bill Exist (error_code
        20002) is BillNotReady, any other UpstreamError."""
        params = {"appid": self.config.appid, "mch_id": self.config.mch_id, "nonce_str": wire.nonce(),
                  "bill_date": day.strftime("%Y%m%d"), "bill_type": "ALL", "tar_type": "GZIP"}
        if self.config.sign_type != wire.MD5:
            params["sign_type"] = self.config.sign_type
        body = wire.signed_xml(params, self.config.api_key, self.config.sign_type)
        url = self.config.pay_base_url.rstrip("/") + "/pay/downloadbill"
        async with metrics.WeChatCall("downloadbill"):
            answer = await bill.bounded(self._fetch("POST", url, body, "downloadbill",
                                                    max_body=self.config.bill_max_bytes), self.config.bill_max_bytes)
            if answer.lstrip()[:5] == b"<xml>":
                raise _bill_refused(answer)
        return await bill.read(answer, self.config.bill_max_bytes, gzipped=answer[:2] == bill.GZIP_MAGIC)

    async def _pay(self, path, fields, client_cert=False, sign_type=None):
        """Sign (with sign_type, default the configured one), send, verify the answer."""
        name = path.rsplit("/", 1)[-1]
        sign_type = sign_type or self.config.sign_type
        params = {"appid": self.config.appid, "mch_id": self.config.mch_id, **fields}
        if sign_type != wire.MD5:
            params["sign_type"] = sign_type
        url = self.config.pay_base_url.rstrip("/") + path

        async def once():
            # a fresh nonce per attempt; the business fields stay identical, so a retried
            # unifiedorder is the same order at WeChat
            params["nonce_str"] = wire.nonce()
            body = wire.signed_xml(params, self.config.api_key, sign_type)
            answer = await self._fetch("POST", url, body, name, client_cert)
            return self._check_pay_answer(name, answer, sign_type)
        return await self._with_retries(once, name)

    def _check_pay_answer(self, name, body, sign_type):
        try:
            answer = wire.from_xml(body)
        except wire.XMLError as exc:
            raise UpstreamError("%s answered invalid XML: %s" % (name, exc)) from None
        if answer.get("return_code") != "SUCCESS":
            message = answer.get("return_msg", "")
            hint = guidance.sign_error_hint(self.config.pay_base_url, SIGN_FIX) if SIGN_ERROR in message else ""
            raise UpstreamError("%s return_code=%r: %r%s" % (name, answer.get("return_code", "")[:16], message[:128],
                                                              hint))
        if not wire.verify(answer, self.config.api_key, sign_type):
            raise UpstreamError("%s answer is unsigned or wrongly signed; not trusted" % name)
        for field, ours in (("appid", self.config.appid), ("mch_id", self.config.mch_id)):
            if field in answer and answer[field] != ours:
                raise UpstreamError("%s answer is for another appid/mch_id" % name)
            if field not in answer and name not in _MAY_OMIT_IDS:
                raise UpstreamError("%s answer lacks %s" % (name, field))
        if answer.get("result_code") != "SUCCESS":
            err = WeChatRefused(answer.get("err_code", "FAIL"), answer.get("err_code_des", ""))
            if err.wechat_code == _RETRY_PAY:
                return Retry(err)
            raise err
        return answer

def _v2_sign_type(order, config):
    """An order's sign type for a v2 call: its own (its notification is verified with it), but
    an order made under v3 (signed with RSA there) takes the configured v2 sign type."""
    return order.sign_type if order.pay_version == PAY_V2 else config.sign_type


def _bill_refused(answer):
    """downloadbill's XML error as an exception: BillNotReady for No Bill Exist (the day's bill
    is not made yet, or the day had no trades), UpstreamError otherwise."""
    try:
        error = wire.from_xml(answer)
    except wire.XMLError as exc:
        return UpstreamError("downloadbill answered invalid XML: %s" % exc)
    message, code = error.get("return_msg", "")[:128], error.get("error_code", "")[:16]
    if code == NO_BILL or "no bill exist" in message.lower():
        return bill.BillNotReady(code or NO_BILL, "downloadbill: %s" % (message or "No Bill Exist"), empty_day=True)
    return UpstreamError("downloadbill return_code=%r: %r%s" % (error.get("return_code", "")[:16], message,
                                                               " (error_code %s)" % code if code else ""))


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

"""Orders: server-priced creation, payment parameters, reads, close, and reconciliation with orderquery."""
import datetime
import logging
import re
import secrets
import string
import sys

from server import domain, logs, metrics
from server.domain import BEIJING, CLOSED, ORDER, PAID, PAYABLE, PAYERROR, PREPAY_TTL, SUCCESS, NOTPAY, Order
from server.service.common import (MAX_TOTAL_FEE, Part, ServiceError, check_idempotency_key, page, read_cursor,
                                   whole)
from server.wechat import UpstreamError, WeChatError, WeChatRefused

log = logging.getLogger("server.service")

PREPAY_SAFETY_MARGIN = 600  # never hand out a prepay_id with less than 10 minutes left
MAX_QUANTITY = 99
BODY_MAX_BYTES = 127
_OUT_TRADE_NO_ALPHABET = string.ascii_letters + string.digits
_TRADE_NO = re.compile(r"[^/]{1,32}")
_ORDER_STATE = {"CLOSED": CLOSED, "REVOKED": CLOSED, "PAYERROR": PAYERROR}  # orderquery trade_state -> ours
# WeChat's refusals of a (re)prepay -> the API's codes (WeChat's stays in wechat_code)
_NOT_PAYABLE = {"ORDERPAID": "ORDER_PAID", "ORDERCLOSED": "ORDER_CLOSED", "ORDER_EXPIRED": "ORDER_EXPIRED"}


class Orders(Part):
    async def create_order(self, openid, product_id, quantity=1, idempotency_key=None):
        """Price the order from the catalog, store it, get a prepay_id. Returns (order, payment)."""
        product = self.service.catalog.get(product_id)
        if product is None:
            raise ServiceError(400, "UNKNOWN_PRODUCT", "product_id is not in the catalog")
        whole(quantity, MAX_QUANTITY, "INVALID_QUANTITY", "quantity must be an integer from 1 to %d" % MAX_QUANTITY)
        check_idempotency_key(idempotency_key)
        if product.price * quantity > MAX_TOTAL_FEE:
            raise ServiceError(400, "INVALID_QUANTITY", "the total would be over WeChat's limit of %d fen" % MAX_TOTAL_FEE)
        now = self.clock()
        order, created = await self.store.insert_order(Order(
            out_trade_no=new_out_trade_no(now), openid=openid, product_id=product.id,
            quantity=quantity, body=cut_utf8(product.name, BODY_MAX_BYTES),
            total_fee=product.price * quantity, sign_type=self.config.sign_type, pay_version=self.config.pay_version,
            status=NOTPAY,
            idempotency_key=idempotency_key, created_at=now, updated_at=now))
        if not created and (order.product_id, order.quantity) != (product.id, quantity):
            raise ServiceError(409, "IDEMPOTENCY_KEY_REUSED",
                               "this Idempotency-Key was used for a different order")
        logs.bind_order(order.out_trade_no)
        if created:
            metrics.order_created()
            log.debug("order %s created: %s x%d = %d fen", order.out_trade_no, product.id, quantity, order.total_fee)
        elif order.status not in PAYABLE:
            return order, None  # a replay after the order was paid or closed: nothing to pay
        return await self._payable(order)

    async def get_order(self, openid, out_trade_no, refresh=False):
        """The caller's order, reconciled with orderquery when asked or when it is stale."""
        order = await self._own_order(openid, out_trade_no)
        if order.status in PAYABLE and (refresh or self.stale(order)):
            try:
                order = await self.reconcile(order)
            except WeChatError:
                if refresh:
                    raise
                log.warning("order %s: background reconciliation failed: %s", out_trade_no,
                            sys.exc_info()[1])
        return order

    async def list_orders(self, openid, limit, before=None):
        """The caller's orders, newest first: ([order], next cursor or None). No WeChat call."""
        orders = await self.store.list_orders(openid, limit + 1, read_cursor(before, _TRADE_NO))
        return page(orders, limit, "out_trade_no")

    async def repay(self, openid, out_trade_no):
        """Fresh wx.requestPayment params for an unpaid order. Returns (order, payment)."""
        order = await self._own_order(openid, out_trade_no)
        _require_unpaid(order)
        return await self._payable(order)

    async def close(self, openid, out_trade_no):
        """closeorder at WeChat, then CLOSED here; 409 when the order turns out paid."""
        order = await self._own_order(openid, out_trade_no)
        if order.status == CLOSED:
            return order
        _require_unpaid(order)
        try:
            await self.wechat.close_order(out_trade_no)
        except WeChatRefused as exc:
            if exc.wechat_code == "ORDERPAID":
                order = await self.reconcile(order)
                raise ServiceError(409, "ORDER_PAID", "the order is already paid") from None
            if exc.wechat_code not in ("ORDERCLOSED", "ORDERNOTEXIST"):
                raise
        changed, order = await self.store.transition(out_trade_no, domain.sources(ORDER, CLOSED), CLOSED, "close")
        if not changed and order.status != CLOSED:
            raise ServiceError(409, "ORDER_PAID", "the order was paid meanwhile")
        log.info("order %s closed", out_trade_no)
        return order

    async def _own_order(self, openid, out_trade_no):
        order = await self.order_named(out_trade_no)
        if order is None or not secrets.compare_digest(order.openid, openid):
            # another user's order is indistinguishable from a missing one
            raise ServiceError(404, "ORDER_NOT_FOUND", "no such order")
        return order

    async def any_order(self, out_trade_no):
        """The order, whoever's it is (the admin API); 404 ORDER_NOT_FOUND."""
        order = await self.order_named(out_trade_no)
        if order is None:
            raise ServiceError(404, "ORDER_NOT_FOUND", "no such order")
        return order

    # -- payment params ----------------------------------------------------------
    async def _payable(self, order):
        """Make sure the order has a live prepay_id; return (order, requestPayment params)."""
        now = self.clock()
        if order.prepay_id and order.prepay_expires_at - now > PREPAY_SAFETY_MARGIN:
            return order, self.payment_params(order.prepay_id, order)
        try:
            prepay_id = await self.wechat.prepay(order)
        except WeChatRefused as exc:
            if exc.wechat_code in _NOT_PAYABLE:
                await self.reconcile(order)
                raise ServiceError(409, _NOT_PAYABLE[exc.wechat_code], "the order is no longer payable",
                                   exc.wechat_code) from None
            raise
        # WeChat answers a repeat with the same prepay_id while it is valid: its expiry stands
        expires_at = order.prepay_expires_at if prepay_id == order.prepay_id else now + PREPAY_TTL
        payable_order = await self.store.set_prepay(order.out_trade_no, prepay_id, expires_at)
        if payable_order is None:
            raise ServiceError(409, "ORDER_NOT_PAYABLE", "the order is no longer unpaid")
        return payable_order, self.payment_params(prepay_id, order)

    def payment_params(self, prepay_id, order):
        """wx.requestPayment's five fields, paySign computed by the client (v2: MD5 or
        HMAC-SHA256 with the API key; v3: RSA with the merchant's key) and nowhere else."""
        return self.wechat.payment_params(prepay_id, order, int(self.clock()))

    # -- reconciliation ----------------------------------------------------------
    async def reconcile(self, order):
        """Bring an order in line with orderquery; the same transitions as notify."""
        try:
            answer = await self.wechat.order_query(order.out_trade_no)
        except WeChatRefused as exc:
            if exc.wechat_code != "ORDERNOTEXIST":
                raise
            await self.store.mark_checked(order.out_trade_no, self.clock())
            return await self.store.get_order(order.out_trade_no)
        state = answer.get("trade_state")
        if state in PAID:
            problem = _paid_problem(answer, order)
            if problem:
                raise UpstreamError("orderquery for %s: %s" % (order.out_trade_no, problem))
            return (await self.apply_paid(order, answer["transaction_id"], answer.get("time_end", ""),
                                          "orderquery"))[1]
        target = _ORDER_STATE.get(state)
        if target and target != order.status:
            return (await self.store.transition(order.out_trade_no, domain.sources(ORDER, target), target,
                                                "orderquery"))[1]
        await self.store.mark_checked(order.out_trade_no, self.clock())
        return await self.store.get_order(order.out_trade_no)

    async def apply_paid(self, order, transaction_id, time_end, source, note=None):
        """The one transition to SUCCESS, recording transaction_id and time_end (and logging the
        notification `note` with it): (changed, order)."""
        changed, order = await self.store.transition(
            order.out_trade_no, domain.sources(ORDER, SUCCESS), SUCCESS, source, note,
            transaction_id=transaction_id, time_end=time_end)
        if changed:
            log.info("order %s paid (%s, transaction %s)", order.out_trade_no, source, order.transaction_id)
            metrics.payment_recorded(source)
        return changed, order


def new_out_trade_no(now):
    """32 chars: Beijing time to the second + 18 random alphanumerics (~107 bits)."""
    stamp = datetime.datetime.fromtimestamp(now, BEIJING).strftime("%Y%m%d%H%M%S")
    return stamp + base62(secrets.randbits(107), 18)


def base62(number, width):
    digits = []
    for _ in range(width):
        number, digit = divmod(number, 62)
        digits.append(_OUT_TRADE_NO_ALPHABET[digit])
    return "".join(digits)


def cut_utf8(text, max_bytes):
    """text shortened to at most max_bytes of UTF-8, never splitting a character."""
    return text.encode("utf-8")[:max_bytes].decode("utf-8", "ignore")


def _paid_problem(answer, order):
    """Why orderquery's word that an order is paid cannot be recorded, or None."""
    if answer.get("total_fee") is None:
        return "total_fee missing or not a whole number"
    if answer["total_fee"] != order.total_fee:
        return "total_fee %d does not match the order's %d" % (answer["total_fee"], order.total_fee)
    if not answer.get("transaction_id"):
        return "transaction_id missing"
    return None


def _require_unpaid(order):
    if order.status in PAID:
        raise ServiceError(409, "ORDER_PAID", "the order is already paid (%s)" % order.status)
    if order.status not in PAYABLE:
        raise ServiceError(409, "ORDER_%s" % order.status, "the order is %s" % order.status)

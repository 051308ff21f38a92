"""API v3's changes to the simulator's State: request nonces, the notification signer, JSAPI
orders, closes and refunds (State inherits them: every change is still a State method)."""
import time

from simulator.models import Order, Refund, beijing, openid_for
from simulator.revision import changes
from simulator.v3 import rules as v3rules
from simulator.v3.rules import V3Error


class V3State:
    """The v3 half of State: it works on State's orders, refunds and clock (state.py)."""

    def v3_nonce_seen(self, mchid, nonce_str):
        """Whether this merchant's request nonce was used within the remembered window."""
        forget_after = self.v3_nonces.get((mchid, nonce_str))
        return forget_after is not None and forget_after > time.time()

    def remember_v3_nonce(self, mchid, nonce_str):
        """A verified request's nonce: refused again for NONCE_MEMORY seconds (real time, as
        the signature window is; the oldest are forgotten first past MAX_NONCES)."""
        now = time.time()
        while self.v3_nonces:
            key, forget_after = next(iter(self.v3_nonces.items()))
            if forget_after > now and len(self.v3_nonces) < v3rules.MAX_NONCES:
                break
            del self.v3_nonces[key]
        self.v3_nonces[(mchid, nonce_str)] = now + v3rules.NONCE_MEMORY

    def next_v3_signer(self):
        """Which WeChat key signs the next notification attempt: "public-key" or
        "certificate"; in migration mode they alternate, the public key first (API answers:
        V3Setup.answer_signer)."""
        mode = self.v3.key_mode
        self.v3_signatures += 1
        if mode == "migration":
            return "public-key" if self.v3_signatures % 2 else "certificate"
        return "certificate" if mode == "certificate" else "public-key"

    @changes("orders")
    def v3_order(self, mchid, appid, body, trade_type="JSAPI"):
        """POST /v3/pay/transactions/jsapi (or /native, /app, /h5: trade_type NATIVE, APP,
        MWEB): a new order, or the same open order of the same kind again with a live
        prepay_id; V3Error otherwise (ORDERPAID, ORDER_CLOSED, OUT_TRADE_NO_USED)."""
        fields = v3rules.check_order(body, trade_type)
        if trade_type == "JSAPI" and not self.openid_issued(appid, fields["openid"]):
            raise V3Error("PARAM_ERROR", "appid和openid不匹配",
                          detail="payer.openid %s was not issued for appid %s (POST /sim/login)"
                          % (fields["openid"], appid))
        order = self.orders.get((mchid, fields["out_trade_no"]))
        if order is not None:
            v3rules.check_repeat(order, body, trade_type)
            if self.prepay_expired(order):
                self._new_v3_prepay(order)
            return order
        expire = fields["expire_at"]
        v2_fields = {"appid": appid, "body": fields["description"], "attach": fields["attach"],
                     "total_fee": str(fields["total"]), "fee_type": "CNY",
                     "trade_type": trade_type, "openid": fields["openid"],
                     "notify_url": body["notify_url"], "sign_type": "RSA",
                     "time_expire": beijing(expire) if expire is not None else ""}
        order = Order(mchid, fields["out_trade_no"], appid, False, "RSA", v2_fields,
                      self.clock.now(), api="v3", request=dict(body))
        self.orders[(order.mch_id, order.out_trade_no)] = order
        self._new_v3_prepay(order)
        return order

    def _new_v3_prepay(self, order):
        """A new prepay_id; an H5 order's lives as its h5_url does (issue_h5_link): H5下单
        answers only the link, so a 下单 after it expired answers a new prepay_id and link."""
        self._new_prepay(order)
        if order.fields["trade_type"] == "MWEB":
            self.issue_h5_link(order)
            order.prepay_expires_at = order.h5_link_expires_at

    @changes("orders")
    def v3_payer(self, order, user):
        """Who scanned the Native code or opened the H5 or App payment: the payer's openid
        for the order's appid (JSAPI orders name theirs when they are created)."""
        order.fields["openid"] = openid_for(order.appid, user)

    @changes("orders")
    def v3_close(self, order):
        """POST .../out-trade-no/{no}/close: CLOSED, unless paid or closed already."""
        v3rules.check_open(order)
        order.trade_state = "CLOSED"

    @changes("orders", "refunds")
    def v3_refund(self, mchid, fields):
        """POST /v3/refund/domestic/refunds (fields: v3rules.check_refund's): (Refund,
        repeated). The same out_refund_no refunds once: repeated with the same amounts it
        answers the refund already accepted; with others, or for another order, it fails."""
        order = self.find_order(mchid, fields["out_trade_no"], fields["transaction_id"])
        if order is None or not order.paid:
            raise V3Error("RESOURCE_NOT_EXISTS", "订单不存在",
                          detail="no paid order %s of merchant %s"
                          % (fields["transaction_id"] or fields["out_trade_no"], mchid))
        existing = self.refunds.get((mchid, fields["out_refund_no"]))
        if existing is not None:
            v3rules.check_refund_repeat(existing, order, fields)
            return existing, True
        v3rules.check_new_refund(order, fields)
        now = self.clock.now()
        refund = Refund(
            mch_id=mchid, appid=order.appid, out_trade_no=order.out_trade_no,
            transaction_id=order.transaction_id, out_refund_no=fields["out_refund_no"],
            refund_id=self._refund_id(now), total_fee=order.total_fee,
            refund_fee=fields["refund"], sandbox=False, sign_type="RSA",
            notify_url=fields["notify_url"], created_at=now,
            due_at=now + self.clock.scaled(self.refund_delay),
            outcome=order.refund_outcome or "SUCCESS", refund_desc=fields["reason"],
            refund_account="AVAILABLE", api="v3")
        return self._add_refund(order, refund), False

"""API v2's changes to the simulator's State: unifiedorder, closeorder, refund, and the
refundquery lookup (State inherits them: every change is still a State method)."""
from simulator.models import Order, Refund, openid_for
from simulator.revision import changes
from simulator.v2 import rules as v2rules, wire as v2wire
from simulator.v2.rules import PayError


class V2State:
    """The v2 half of State: it works on State's orders, refunds and clock (state.py)."""

    @changes("orders")
    def unified_order(self, merchant, msg, sandbox):
        """Create or repeat an order (protocol.md 4); returns the Order or raises."""
        v2rules.check_unifiedorder(msg)
        if msg["trade_type"] == "JSAPI" and not self.openid_issued(msg["appid"], msg["openid"]):
            raise PayError("PARAM_ERROR", "appid和openid不匹配")
        fields = {k: msg.get(k, "") for k in v2rules.BUSINESS_FIELDS}
        fields["sign_type"] = msg.get("sign_type") or v2wire.MD5
        order = self.orders.get((merchant.mch_id, msg["out_trade_no"]))
        if order is not None:
            v2rules.check_repeat(order, fields)
            if self.prepay_expired(order):
                self._new_prepay(order)
            return order
        order = Order(merchant.mch_id, msg["out_trade_no"], msg["appid"], sandbox,
                      fields["sign_type"], fields, self.clock.now(),
                      device_info=msg.get("device_info", ""))
        self.orders[(order.mch_id, order.out_trade_no)] = order
        self._new_prepay(order)
        return order

    @changes("orders")
    def set_payer(self, order, user):
        """Who pays an order created without openid (NATIVE, APP, MWEB): WeChat learns the payer
        when the phone pays, and names their openid under the order's appid in the payment
        notification and orderquery, as for JSAPI."""
        order.payer_openid = openid_for(order.appid, user)
        self.openids[order.appid][order.payer_openid] = user

    @changes("orders")
    def close_order(self, order):
        v2rules.check_open(order)
        order.trade_state = "CLOSED"

    @changes("orders", "refunds")
    def refund(self, merchant, msg, sandbox):
        """POST /secapi/pay/refund (protocol.md 7): (Refund, repeated) or raises.

        The same out_refund_no refunds once: repeated with the same amounts it answers the
        refund already accepted (whatever its status); with other amounts it fails.
        """
        total_fee, refund_fee = v2rules.check_refund(msg)
        order = self.find_order(merchant.mch_id, msg.get("out_trade_no", ""),
                                msg.get("transaction_id", ""))
        if order is None or order.appid != msg["appid"] or not order.paid:
            raise PayError("ORDERNOTEXIST")
        existing = self.refunds.get((merchant.mch_id, msg["out_refund_no"]))
        if existing is not None:
            v2rules.check_refund_repeat(existing, order, total_fee, refund_fee)
            return existing, True
        v2rules.check_new_refund(order, total_fee, refund_fee)
        return self._new_refund(order, msg, refund_fee, sandbox), False

    def _new_refund(self, order, msg, refund_fee, sandbox):
        now = self.clock.now()
        refund = Refund(
            mch_id=order.mch_id, appid=order.appid, out_trade_no=order.out_trade_no,
            transaction_id=order.transaction_id, out_refund_no=msg["out_refund_no"],
            refund_id=self._refund_id(now), total_fee=order.total_fee, refund_fee=refund_fee,
            sandbox=sandbox, sign_type=msg.get("sign_type") or v2wire.MD5,
            notify_url=msg.get("notify_url", ""), created_at=now,
            due_at=now + self.clock.scaled(self.refund_delay),
            outcome=order.refund_outcome or "SUCCESS", refund_desc=msg.get("refund_desc", ""),
            refund_account=msg.get("refund_account") or "REFUND_SOURCE_UNSETTLED_FUNDS",
            fee_type=msg.get("refund_fee_type") or "CNY")
        return self._add_refund(order, refund)

    def query_refunds(self, mch_id, appid, msg):
        """refundquery: (order, refunds); refund_id > out_refund_no > transaction_id >
        out_trade_no, as WeChat documents. Raises REFUNDNOTEXIST when there is none."""
        if msg.get("refund_id") or msg.get("out_refund_no"):
            if msg.get("refund_id"):
                refund = self.by_refund_id.get(msg["refund_id"])
            else:
                refund = self.refunds.get((mch_id, msg["out_refund_no"]))
            ok = refund is not None and refund.mch_id == mch_id and refund.appid == appid
            if not ok:
                raise PayError("REFUNDNOTEXIST")
            return self.orders[(mch_id, refund.out_trade_no)], [refund]
        order = self.find_order(mch_id, msg.get("out_trade_no", ""),
                                msg.get("transaction_id", ""))
        if order is None or order.appid != appid or not order.refunds:
            raise PayError("REFUNDNOTEXIST")
        return order, list(order.refunds)

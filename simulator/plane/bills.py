"""The bills' control plane: a day's bill as text (GET /sim/bills/<yyyy-mm-dd>), and the two
faults that make WeChat's books differ from the shop's: a payment whose notifications are
lost, and a refund made by hand in the merchant platform."""
import re

from simulator import bills
from simulator.plane.control import SimError, SimHandler, number

OUT_REFUND_NO = re.compile(r"^[0-9A-Za-z_\-|*@]{1,64}$")


class SimBillsHandler(SimHandler):
    """GET /sim/bills/<yyyy-mm-dd>[?bill_type=ALL|SUCCESS|REFUND|FUNDFLOW&mch_id=]: the bill
    WeChat serves for that Beijing day, as text; 404 NO_BILL with the reason when there is
    none (yet), 400 BAD_FIELD for a malformed date or type."""

    def get(self, date):
        kind = self.get_query_argument("bill_type", "ALL")
        if kind not in bills.BILL_TYPES + ("FUNDFLOW",):
            raise SimError(400, "BAD_FIELD", "bill_type must be one of ALL, SUCCESS, REFUND, "
                           "FUNDFLOW")
        mch_id = self.merchant_id()
        try:
            day = bills.parse_day(date, "%Y-%m-%d")
            text = bills.of_state(self.state, mch_id, day, kind)
        except bills.NoBill as exc:
            if exc.reason == "invalid_date":
                raise SimError(400, "BAD_FIELD", exc.detail) from None
            raise SimError(404, "NO_BILL", exc.detail) from None
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(text.encode("utf-8"))

    def merchant_id(self):
        """?mch_id=, optional when exactly one merchant is configured."""
        merchants = self.state.config.merchants
        mch_id = self.get_query_argument("mch_id", None)
        if mch_id is None and len(merchants) == 1:
            return next(iter(merchants))
        if mch_id not in merchants:
            raise SimError(400, "UNKNOWN_MCH_ID", "mch_id must be one of: " + ", ".join(merchants))
        return mch_id


class SimOrderNotificationsHandler(SimHandler):
    """POST /sim/orders/<no>/notifications {"deliver": false|true}: whether the order's
    payment notifications reach its notify_url. false before it is paid: WeChat's books
    have the payment, the shop never hears of it (only the bill or orderquery tell)."""

    def post(self, out_trade_no):
        deliver = self.json_body().get("deliver")
        if not isinstance(deliver, bool):
            raise SimError(400, "BAD_FIELD", "deliver must be true or false")
        order = self.order_named(out_trade_no)
        self.state.set_notify_lost(order, not deliver)
        self.reply({"out_trade_no": order.out_trade_no, "mch_id": order.mch_id,
                    "deliver": deliver})


class SimOrderRefundsHandler(SimHandler):
    """POST /sim/orders/<no>/refunds {"refund_fee", "out_refund_no"?, "notify_url"?}: a
    refund made by hand in the merchant platform, SUCCESS at once; notified only to a
    notify_url given here (the merchant platform's configured refund URL)."""

    def post(self, out_trade_no):
        data = self.json_body()
        refund_fee = number(data, "refund_fee", None, 1, 10 ** 12)
        if not isinstance(refund_fee, int):
            raise SimError(400, "BAD_FIELD", "refund_fee is an integer number of fen")
        order = self.order_named(out_trade_no)
        out_refund_no = data.get("out_refund_no") or "MP" + order.transaction_id[-16:] + str(
            len(order.refunds) + 1)
        notify_url = data.get("notify_url") or ""
        if not isinstance(out_refund_no, str) or not OUT_REFUND_NO.match(out_refund_no):
            raise SimError(400, "BAD_FIELD", "out_refund_no: 1..64 of 0-9 a-z A-Z _ - | * @")
        if not isinstance(notify_url, str) or not re.match(r"^https?://", notify_url or "http://"):
            raise SimError(400, "BAD_FIELD", "notify_url must be an http(s) URL")
        try:
            refund = self.state.platform_refund(order, refund_fee, out_refund_no, notify_url)
        except ValueError as exc:
            raise SimError(409, "NOT_REFUNDABLE", str(exc)) from None
        self.settlement.settle(refund, "SUCCESS")
        self.reply(refund.to_json(), 201)

"""State: everything the simulator remembers, and the only place where it changes.

Handlers and the notifier parse, ask State and answer; every change is a State method (each
API version's own come from V2State and V3State, in simulator/v2/state.py and v3/state.py).
Reads (find_order, query_refunds, due_refunds, ...) change nothing: time passing settles
refunds through the settlement timers, not through whoever looks next.
"""
import base64
import collections
import itertools
import random
import secrets

from simulator import models, payurls, rules
from simulator.config import REFUND_DELAY, check_refund_delay
from simulator.models import (DEVELOPER_USER, Clock, Fault, LoginCode, Refund, beijing,
                              check_outcome, openid_for)
from simulator.revision import WHAT, changes
from simulator.rules import LoginError
from simulator.v2.state import V2State
from simulator.v3.state import V3State

REQUEST_LOG_SIZE = 1000
NOTIFICATION_LOG_SIZE = 5000


def check_probability(value):
    value = float(value)
    if not 0 <= value <= 1:
        raise ValueError("a probability is between 0 and 1, not %r" % (value,))
    return value


class State(V2State, V3State):
    """Everything the simulator remembers; reset() forgets it all.

    seed: the seed of the fault rules' random draws (None: unseeded). reset() seeds again,
    so the same seed fires the same faults for the same requests after every reset.
    notify_sign_type_probability: the chance (0..1, default 0) that an ordinary payment
    notification carries a signed sign_type field, drawn from the same seeded random.
    v3: the API v3 keys (simulator.v3.keys.V3Setup); None serves no /v3/ path.
    """

    def __init__(self, config, time_scale=1.0, refund_delay=REFUND_DELAY,
                 accept_unknown_codes=False, seed=None, notify_sign_type_probability=0.0,
                 v3=None):
        self.config = config
        self.v3 = v3
        # developer mode (WeChat DevTools): a login code this simulator never issued (one
        # Tencent or DevTools made) is taken once, as the app's developer user
        self.accept_unknown_codes = accept_unknown_codes
        self.clock = Clock(time_scale)
        self.refund_delay = check_refund_delay(refund_delay)
        self.seed = seed
        self.random = random.Random(seed)
        # how often an ordinary payment notification carries a (signed) sign_type field, as
        # real WeChat's sometimes do; drawn from self.random, so --seed repeats it too
        self.notify_sign_type_probability = check_probability(notify_sign_type_probability)
        # connections accepted and WeChat calls served: what a client's connection reuse looks like
        self.stats = collections.Counter()
        # numbers request-log entries and notification attempts (the console's row keys); not
        # reset, so a number never names two entries
        self._seq = itertools.count(1)
        # counts changes (not reset either: a console never sees it go back); listeners hear
        # each change as (revision, what) (plane/events.py pushes them to the console)
        self.revision = 0
        self.listeners = []
        self.reset()

    def changed(self, *what):
        """Something the console shows changed (`what`: names from revision.WHAT)."""
        self.revision += 1
        for listener in list(self.listeners):
            listener(self.revision, what)

    def reset(self):
        """Forget orders, codes, refunds, logs and faults (transport counters in `stats` stay)."""
        self.clock.offset = 0.0
        self.random.seed(self.seed)
        self.codes = {}
        self.openids = collections.defaultdict(dict)    # appid -> {openid: user}
        self.orders = {}                                # (mch_id, out_trade_no) -> Order
        self.by_prepay = {}
        self.by_transaction = {}
        self.refunds = {}                               # (mch_id, out_refund_no) -> Refund
        self.by_refund_id = {}
        self.notifications = collections.deque(maxlen=NOTIFICATION_LOG_SIZE)
        self.requests = collections.deque(maxlen=REQUEST_LOG_SIZE)
        self.faults = []
        self.phone_results = {}                         # (mch_id, out_trade_no) -> last phone result
        self.v3_nonces = collections.OrderedDict()      # (mchid, nonce_str) -> forget after
        self.v3_signatures = 0                          # notification attempts signed
        self.bill_files = {}                            # v3 bill download token -> BillFile
        self.changed(*(w for w in WHAT if w != "config"))

    @changes("config")
    def set_refund_delay(self, seconds):
        self.refund_delay = check_refund_delay(seconds)

    def advance_clock(self, seconds):
        """POST /sim/clock; what became due is settled by the caller's Settlement. A new
        Beijing day means the bill of the day that ended exists."""
        day = beijing(self.clock.now(), "%Y%m%d")
        self.clock.advance(seconds)
        new_day = beijing(self.clock.now(), "%Y%m%d") != day
        self.changed(*(("clock", "bills") if new_day else ("clock",)))

    # --- logs and counters -------------------------------------------------------
    def log_request(self, entry, wechat=True):
        """Append a request-log entry; the request in flight fills it in until it ends."""
        entry["seq"] = next(self._seq)
        self.requests.append(entry)
        if wechat:
            self.stats["wechat_requests"] += 1
        self.changed("requests")
        return entry

    @changes("notifications")
    def log_notification(self, record):
        """Append a notification attempt; the attempt fills in its outcome when it ends."""
        record["seq"] = next(self._seq)
        self.notifications.append(record)
        return record

    def count_connection(self):
        self.stats["connections_accepted"] += 1

    # --- login -------------------------------------------------------------------
    def issue_code(self, appid, user):
        """wx.login: a fresh single-use code; remembers the openid as issued for appid."""
        openid = openid_for(appid, user)
        self.openids[appid][openid] = user
        code = secrets.token_urlsafe(24)[:32]
        expires_at = self.clock.now() + self.clock.scaled(rules.CODE_TTL)
        self.codes[code] = LoginCode(code, appid, user, openid, expires_at)
        return self.codes[code]

    def adopt_code(self, appid, js_code):
        """Developer mode: an unknown code becomes a code issued now to DEVELOPER_USER."""
        login = self.issue_code(appid, DEVELOPER_USER)
        del self.codes[login.code]
        login.code = js_code
        self.codes[js_code] = login
        return login

    def check_app(self, appid, secret):
        app = self.config.apps.get(appid)
        if app is None:
            raise LoginError(40013, "invalid appid")
        if not secrets.compare_digest(app.secret.encode("utf-8"), secret.encode("utf-8")):
            raise LoginError(40125, "invalid appsecret")
        return app

    def exchange_code(self, appid, js_code):
        """code2Session: openid and a fresh session_key, or LoginError."""
        login = self.codes.get(js_code)
        if login is None and self.accept_unknown_codes:
            login = self.adopt_code(appid, js_code)
        if login is None or login.appid != appid:
            raise LoginError(40029, "invalid code")
        if login.used:
            raise LoginError(40163, "code been used")
        if self.clock.now() >= login.expires_at:
            raise LoginError(40029, "invalid code")
        login.used = True
        session_key = base64.b64encode(secrets.token_bytes(16)).decode("ascii")
        return {"session_key": session_key, "openid": login.openid}

    def openid_issued(self, appid, openid):
        return openid in self.openids.get(appid, {})

    # --- orders ------------------------------------------------------------------
    def _new_prepay(self, order):
        now = self.clock.now()
        order.prepay_id = models.new_prepay_id(now)
        order.prepay_expires_at = now + self.clock.scaled(rules.PREPAY_TTL)
        order.h5_link, order.h5_link_expires_at = 0, 0.0
        self.by_prepay[order.prepay_id] = order

    def prepay_expired(self, order):
        return self.clock.now() >= order.prepay_expires_at

    @changes("orders")
    def issue_h5_link(self, order):
        """An H5 order's link (mweb_url, h5_url) as an order call answers it: the current one
        while it lives, else the next, for payurls.H5_LINK_TTL."""
        now = self.clock.now()
        if order.h5_link_expires_at and now < order.h5_link_expires_at:
            return
        if order.h5_link_expires_at:
            order.h5_link += 1
        order.h5_link_expires_at = now + self.clock.scaled(payurls.H5_LINK_TTL)

    def h5_link_expired(self, order):
        return self.clock.now() >= order.h5_link_expires_at

    def find_order(self, mch_id, out_trade_no="", transaction_id=""):
        """transaction_id wins over out_trade_no, as WeChat documents."""
        if transaction_id:
            order = self.by_transaction.get(transaction_id)
            return order if order is not None and order.mch_id == mch_id else None
        return self.orders.get((mch_id, out_trade_no))

    def orders_named(self, out_trade_no):
        return [o for (_, no), o in self.orders.items() if no == out_trade_no]

    @changes("orders")
    def mark_paid(self, order, coupon_fee=0, coupon_type="CASH"):
        """Paid, in cash or partly with a coupon (rules.check_coupon has checked it)."""
        now = self.clock.now()
        if coupon_fee:
            order.coupon_fee, order.coupon_type = coupon_fee, coupon_type
            order.coupon_id = models.new_coupon_id()
        if not order.openid:    # a Native, App or H5 order paid from the console
            self.set_payer(order, models.PAYER_USER)
        order.trade_state = "SUCCESS"
        order.transaction_id = models.new_transaction_id(now)
        order.time_end = beijing(now)
        order.paid_at = now
        order.notify_id = models.new_notify_id(now)
        order.bank_type = "OTHERS"
        self.by_transaction[order.transaction_id] = order

    @changes("orders")
    def payment_failed(self, order):
        """wx.requestPayment failed at the bank: the order is PAYERROR."""
        order.trade_state = "PAYERROR"

    @changes("orders")
    def payment_pending(self, order):
        """The payer still has to enter the password: USERPAYING."""
        order.trade_state = "USERPAYING"

    @changes("orders")
    def record_phone_result(self, order, result, err_msg):
        """What the phone (wx.requestPayment, /sim/pay or the console) last did with the order:
        a cancelled payment changes nothing at WeChat, so this is its only trace."""
        self.phone_results[(order.mch_id, order.out_trade_no)] = {
            "result": result, "errMsg": err_msg, "time": self.clock.now()}

    @changes("orders")
    def set_notify_lost(self, order, lost):
        """Whether the order's payment notifications are lost (POST .../notifications)."""
        order.notify_lost = lost

    @changes("orders")
    def set_refund_outcome(self, order, status):
        """How the order's next refund ends (SUCCESS, REFUNDCLOSE or CHANGE)."""
        order.refund_outcome = "" if check_outcome(status) == "SUCCESS" else status

    def draw_notify_sign_type(self):
        """Whether the next ordinary payment notification carries sign_type (one draw)."""
        p = self.notify_sign_type_probability
        return p > 0 and self.random.random() < p

    @changes("orders", "refunds")
    def mark_notified(self, record):
        """An Order's or a Refund's notification was answered SUCCESS."""
        record.notify_delivered = True

    # --- refunds -----------------------------------------------------------------
    def _add_refund(self, order, refund):
        """The order's new refund (either version): remembered, the order in REFUND."""
        order.refund_outcome = ""
        order.refunds.append(refund)
        order.trade_state = "REFUND"
        self.refunds[refund.key] = refund
        self.by_refund_id[refund.refund_id] = refund
        return refund

    @changes("orders", "refunds")
    def platform_refund(self, order, refund_fee, out_refund_no, notify_url=""):
        """A refund made by hand in the merchant platform (POST /sim/orders/<no>/refunds):
        accepted PROCESSING like any other (the caller settles it at once); the backend
        never asked for it. ValueError when the order cannot take it."""
        if not order.paid:
            raise ValueError("order %s is %s: only a paid order is refunded"
                             % (order.out_trade_no, order.trade_state))
        if not 0 < refund_fee <= order.total_fee - order.refunded_fee:
            raise ValueError("refund_fee must be 1..%d (the order's total less what is "
                             "refunded)" % (order.total_fee - order.refunded_fee))
        if (order.mch_id, out_refund_no) in self.refunds:
            raise ValueError("merchant %s already has refund %s" % (order.mch_id, out_refund_no))
        now = self.clock.now()
        refund = Refund(
            mch_id=order.mch_id, appid=order.appid, out_trade_no=order.out_trade_no,
            transaction_id=order.transaction_id, out_refund_no=out_refund_no,
            refund_id=self._refund_id(now), total_fee=order.total_fee, refund_fee=refund_fee,
            sandbox=order.sandbox, sign_type=order.sign_type, notify_url=notify_url,
            created_at=now, due_at=now, refund_desc="商户平台退款", api=order.api,
            refund_account="AVAILABLE" if order.api == "v3" else "REFUND_SOURCE_UNSETTLED_FUNDS",
            request_source="VENDOR_PLATFORM")
        outcome = order.refund_outcome      # meant for the next refund the backend asks for
        self._add_refund(order, refund)
        order.refund_outcome = outcome
        return refund

    def _refund_id(self, now):
        while True:
            refund_id = models.new_refund_id(now)
            if refund_id not in self.by_refund_id:
                return refund_id

    @changes("orders", "refunds")
    def settle_refund(self, refund, status):
        """PROCESSING -> SUCCESS, REFUNDCLOSE or CHANGE."""
        check_outcome(status)
        now = self.clock.now()
        refund.refund_status = status
        refund.settled_at = now
        refund.notify_id = models.new_notify_id(now)
        if status == "SUCCESS":
            refund.success_time = beijing(now, "%Y-%m-%d %H:%M:%S")
        return refund

    def due_refunds(self):
        now = self.clock.now()
        return [r for r in self.refunds.values()
                if r.refund_status == "PROCESSING" and now >= r.due_at]

    def pending_refunds(self):
        return [r for r in self.refunds.values() if r.refund_status == "PROCESSING"]

    def refunds_named(self, out_refund_no):
        return [r for (_, no), r in self.refunds.items() if no == out_refund_no]

    def holds(self, record):
        """Whether this Order or Refund is still the one remembered (not from before a reset)."""
        if isinstance(record, Refund):
            return self.refunds.get(record.key) is record
        return self.orders.get((record.mch_id, record.out_trade_no)) is record

    # --- faults ------------------------------------------------------------------
    @changes("faults")
    def add_fault(self, path, kind, value=None, probability=1.0, count=None):
        fault = Fault(secrets.token_hex(6), path, kind, value, probability, count)
        self.faults.append(fault)
        return fault

    def fire_faults(self, path):
        """The faults that fire for one request to path, counted down."""
        fired = [f for f in self.faults
                 if f.path == path and self.random.random() < f.probability]
        for fault in fired:
            fault.fired += 1
            if fault.count is not None:
                fault.count -= 1
        self.faults = [f for f in self.faults if f.count is None or f.count > 0]
        if fired:
            self.changed("faults")
        return fired

    @changes("faults")
    def delete_fault(self, fault_id):
        """True when a rule with that id was removed."""
        before = len(self.faults)
        self.faults = [f for f in self.faults if f.id != fault_id]
        return len(self.faults) < before

    @changes("faults")
    def clear_faults(self):
        """Remove every rule; how many there were."""
        deleted = len(self.faults)
        self.faults = []
        return deleted

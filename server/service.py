"""Business rules: login, server-priced orders, payment params, notify, reconcile, close."""
import datetime
import hashlib
import logging
import secrets
import string
import time

from server import wxpay
from server.store import CLOSED, NOTPAY, PAYERROR, REFUND, SUCCESS, Order
from server.wechat import UpstreamError, WeChatError, WeChatRefused

log = logging.getLogger("server.service")

PREPAY_TTL = 7200          # WeChat keeps a prepay_id for 2 hours
PREPAY_SAFETY_MARGIN = 600  # never hand out one with less than 10 minutes left
RECONCILE_AFTER = 60        # an unpaid order older than this is checked with orderquery
RECONCILE_EVERY = 10        # ... but not more often than this
MAX_QUANTITY = 99
BODY_MAX_BYTES = 127
LOGIN_REFUSALS = {40029, 40163, 40226}
_OUT_TRADE_NO_ALPHABET = string.ascii_letters + string.digits
_BEIJING = datetime.timezone(datetime.timedelta(hours=8))


class ServiceError(Exception):
    """An answer for the API caller: HTTP status, error code, message, WeChat's code."""

    def __init__(self, status, code, message, wechat_code=None):
        super().__init__(message)
        self.status, self.code, self.message, self.wechat_code = status, code, message, wechat_code


class Service:
    def __init__(self, config, store, wechat, catalog, clock=time.time):
        self.config = config
        self.store = store
        self.wechat = wechat
        self.catalog = catalog
        self.clock = clock

    # -- login -------------------------------------------------------------------
    async def login(self, code):
        """Exchange a wx.login code for an opaque session token (session_key stays here)."""
        session = await self.code2session(code)
        token = secrets.token_urlsafe(32)
        ttl = self.config.session_ttl
        await self.store.create_session(_token_hash(token), session["openid"],
                                        session["session_key"], self.clock() + ttl)
        return {"token": token, "expires_in": ttl}

    async def code2session(self, code):
        """WeChat's answer for a wx.login code; 401 LOGIN_FAILED when WeChat refuses it."""
        if not isinstance(code, str) or not code.strip() or len(code) > 128:
            raise ServiceError(400, "INVALID_CODE", "code must be the non-empty string from wx.login")
        try:
            return await self.wechat.code2session(code)
        except WeChatRefused as exc:
            if exc.wechat_code in LOGIN_REFUSALS:
                raise ServiceError(401, "LOGIN_FAILED", "WeChat refused the login code",
                                   exc.wechat_code) from None
            raise

    async def authenticate(self, token):
        """The openid behind a session token; 401 when unknown or expired."""
        if token:
            session = await self.store.get_session(_token_hash(token), self.clock())
            if session:
                return session.openid
        raise ServiceError(401, "UNAUTHORIZED", "missing, unknown or expired session token")

    # -- orders ------------------------------------------------------------------
    async def create_order(self, openid, product_id, quantity=1, idempotency_key=None):
        """Price the order from the catalog, store it, get a prepay_id. Returns (order, payment)."""
        product = self.catalog.get(product_id)
        if product is None:
            raise ServiceError(400, "UNKNOWN_PRODUCT", "product_id is not in the catalog")
        if type(quantity) is not int or not 1 <= quantity <= MAX_QUANTITY:
            raise ServiceError(400, "INVALID_QUANTITY", "quantity must be an integer from 1 to %d" % MAX_QUANTITY)
        _check_idempotency_key(idempotency_key)
        now = self.clock()
        order, created = await self.store.insert_order(Order(
            out_trade_no=new_out_trade_no(now), openid=openid, product_id=product.id,
            quantity=quantity, body=cut_utf8(product.name, BODY_MAX_BYTES),
            total_fee=product.price * quantity, sign_type=self.config.sign_type, status=NOTPAY,
            idempotency_key=idempotency_key, created_at=now, updated_at=now))
        if not created and (order.product_id, order.quantity) != (product.id, quantity):
            raise ServiceError(409, "IDEMPOTENCY_KEY_REUSED",
                               "this Idempotency-Key was used for a different order")
        if created:
            log.info("order %s created: %s x%d = %d fen", order.out_trade_no, product.id, quantity, order.total_fee)
        elif order.status not in (NOTPAY, PAYERROR):
            return order, None  # a replay after the order was paid or closed: nothing to pay
        return await self._payable(order)

    async def get_order(self, openid, out_trade_no, refresh=False):
        """The caller's order, reconciled with orderquery when asked or when it is stale."""
        order = await self._own_order(openid, out_trade_no)
        if order.status in (NOTPAY, PAYERROR) and (refresh or self._stale(order)):
            try:
                order = await self.reconcile(order)
            except WeChatError:
                if refresh:
                    raise
                log.warning("order %s: background reconciliation failed", out_trade_no, exc_info=True)
        return order

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
        changed, order = await self.store.transition(out_trade_no, (NOTPAY, PAYERROR), CLOSED, "close")
        if not changed and order.status != CLOSED:
            raise ServiceError(409, "ORDER_PAID", "the order was paid meanwhile")
        log.info("order %s closed", out_trade_no)
        return order

    async def _own_order(self, openid, out_trade_no):
        order = await self.store.get_order(out_trade_no) if _plausible_trade_no(out_trade_no) else None
        if order is None or not secrets.compare_digest(order.openid, openid):
            # another user's order is indistinguishable from a missing one
            raise ServiceError(404, "ORDER_NOT_FOUND", "no such order")
        return order

    def _stale(self, order):
        now = self.clock()
        return (now - order.created_at > RECONCILE_AFTER
                and now - (order.checked_at or 0) > RECONCILE_EVERY)

    # -- payment params ----------------------------------------------------------
    async def _payable(self, order):
        """Make sure the order has a live prepay_id; return (order, requestPayment params)."""
        now = self.clock()
        if order.prepay_id and order.prepay_expires_at - now > PREPAY_SAFETY_MARGIN:
            return order, self.payment_params(order.prepay_id)
        try:
            answer = await self.wechat.unified_order(
                body=order.body, out_trade_no=order.out_trade_no, total_fee=str(order.total_fee),
                spbill_create_ip=self.config.spbill_create_ip, notify_url=self.config.notify_url,
                trade_type="JSAPI", openid=order.openid)
        except WeChatRefused as exc:
            if exc.wechat_code in ("ORDERPAID", "ORDERCLOSED"):
                await self.reconcile(order)
                raise ServiceError(409, exc.wechat_code, "the order is no longer payable") from None
            raise
        prepay_id = answer.get("prepay_id")
        if not prepay_id:
            raise UpstreamError("unifiedorder succeeded without a prepay_id")
        if not await self.store.set_prepay(order.out_trade_no, prepay_id, now + PREPAY_TTL):
            raise ServiceError(409, "ORDER_NOT_PAYABLE", "the order is no longer unpaid")
        order = await self.store.get_order(order.out_trade_no)
        return order, self.payment_params(prepay_id)

    def payment_params(self, prepay_id):
        """wx.requestPayment's five fields, paySign computed here and nowhere else."""
        return wxpay.pay_sign_params(self.config.appid, prepay_id, self.config.api_key,
                                     self.config.sign_type, int(self.clock()), wxpay.nonce())

    # -- notifications -----------------------------------------------------------
    async def handle_notify(self, body):
        """Verify and apply a payment notification. Returns the XML reply for WeChat."""
        try:
            params = wxpay.from_xml(body)
        except wxpay.XMLError as exc:
            log.warning("notify refused: %s", exc)
            return wxpay.fail_reply("invalid XML")
        if params.get("return_code") != "SUCCESS":
            log.warning("notify with return_code=%s ignored", params.get("return_code"))
            return wxpay.fail_reply("return_code is not SUCCESS")
        out_trade_no = params.get("out_trade_no", "")
        order = await self.store.get_order(out_trade_no) if _plausible_trade_no(out_trade_no) else None
        problem = self._notify_problem(params, order)
        if problem:
            log.warning("notify for %r refused: %s", out_trade_no[:64], problem)
            return wxpay.fail_reply(problem)
        if params.get("result_code") != "SUCCESS":
            log.info("order %s: WeChat reports a failed payment (%s)", out_trade_no, params.get("err_code"))
            return wxpay.SUCCESS_REPLY
        changed, order = await self._apply_paid(order, params, "notify")
        if not changed and order.transaction_id != params.get("transaction_id"):
            log.error("order %s: notification with a different transaction_id, not applied", out_trade_no)
            return wxpay.fail_reply("transaction_id does not match")
        return wxpay.SUCCESS_REPLY

    def _notify_problem(self, params, order):
        """Why a notification cannot be trusted for this order, or None."""
        if order is None:
            return "unknown order"
        declared = params.get("sign_type")
        if declared is not None and declared != order.sign_type:
            return "sign_type %s does not match the order's %s" % (declared[:16], order.sign_type)
        if not wxpay.verify(params, self.config.api_key, order.sign_type):
            return "signature mismatch"
        if params.get("appid") != self.config.appid or params.get("mch_id") != self.config.mch_id:
            return "appid or mch_id does not match"
        if params.get("result_code") == "SUCCESS":
            return _paid_problem(params, order)
        return None

    async def _apply_paid(self, order, params, source):
        """The one transition to SUCCESS, recording transaction_id and time_end."""
        changed, order = await self.store.transition(
            order.out_trade_no, (NOTPAY, PAYERROR, CLOSED), SUCCESS, source,
            transaction_id=params["transaction_id"], time_end=params.get("time_end", ""))
        if changed:
            log.info("order %s paid (%s, transaction %s)", order.out_trade_no, source, order.transaction_id)
        return changed, order

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
        if state in (SUCCESS, REFUND):
            problem = _paid_problem(answer, order)
            if problem:
                raise UpstreamError("orderquery for %s: %s" % (order.out_trade_no, problem))
            return (await self._apply_paid(order, answer, "orderquery"))[1]
        target = {"CLOSED": CLOSED, "REVOKED": CLOSED, "PAYERROR": PAYERROR}.get(state)
        if target and target != order.status:
            return (await self.store.transition(order.out_trade_no, (NOTPAY, PAYERROR), target, "orderquery"))[1]
        await self.store.mark_checked(order.out_trade_no, self.clock())
        return await self.store.get_order(order.out_trade_no)


def order_view(order):
    """The API's JSON for an order."""
    view = {"out_trade_no": order.out_trade_no, "status": order.status,
            "total_fee": order.total_fee, "product_id": order.product_id, "quantity": order.quantity}
    if order.transaction_id:
        view["transaction_id"] = order.transaction_id
    if order.time_end:
        view["paid_at"] = beijing_iso(order.time_end)
    return view


def beijing_iso(time_end):
    """WeChat's yyyyMMddHHmmss (Beijing time) as ISO 8601 with +08:00; raw if malformed."""
    try:
        parsed = datetime.datetime.strptime(time_end, "%Y%m%d%H%M%S")
    except ValueError:
        return time_end
    return parsed.replace(tzinfo=_BEIJING).isoformat()


def new_out_trade_no(now):
    """32 chars: Beijing time to the second + 18 random alphanumerics (~107 bits)."""
    stamp = datetime.datetime.fromtimestamp(now, _BEIJING).strftime("%Y%m%d%H%M%S")
    return stamp + "".join(secrets.choice(_OUT_TRADE_NO_ALPHABET) for _ in range(18))


def cut_utf8(text, max_bytes):
    """text shortened to at most max_bytes of UTF-8, never splitting a character."""
    return text.encode("utf-8")[:max_bytes].decode("utf-8", "ignore")


def _paid_problem(params, order):
    if params.get("total_fee") != str(order.total_fee):
        return "total_fee %r does not match the order's %d" % (params.get("total_fee", "")[:16], order.total_fee)
    if not params.get("transaction_id"):
        return "transaction_id missing"
    return None


def _require_unpaid(order):
    if order.status not in (NOTPAY, PAYERROR):
        raise ServiceError(409, "ORDER_%s" % order.status, "the order is %s" % order.status)


def _plausible_trade_no(value):
    return isinstance(value, str) and 0 < len(value) <= 32


def _check_idempotency_key(key):
    if key is not None and not (0 < len(key) <= 64 and key.isascii() and key.isprintable()):
        raise ServiceError(400, "INVALID_IDEMPOTENCY_KEY", "Idempotency-Key must be 1 to 64 printable ASCII characters")


def _token_hash(token):
    # only a hash is stored, so a leaked database holds no usable session tokens
    return hashlib.sha256(token.encode("utf-8")).hexdigest()

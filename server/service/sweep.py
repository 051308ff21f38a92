"""The background sweep: unpaid orders and open refunds whose notification is late are asked about."""
import logging

from server import logs
from server.domain import PREPAY_TTL
from server.service.common import RECONCILE_AFTER, ServiceError
from server.wechat import WeChatError

log = logging.getLogger("server.service")

SWEEP_MAX_AGE = PREPAY_TTL + 3600  # the sweep stops asking about older orders (and refunds)
SWEEP_BATCH = 100


async def sweep(store, clock, reconcile_order, reconcile_refund, limit=SWEEP_BATCH):
    """Ask WeChat about unpaid orders and open refunds whose notification has not come
    (protocol.md section 6). Returns how many were checked; failures are logged."""
    orders, refunds = await store.claim_due(clock(), RECONCILE_AFTER, SWEEP_MAX_AGE, limit)
    for record, reconcile in [(o, reconcile_order) for o in orders] + [(r, reconcile_refund) for r in refunds]:
        with logs.about_order(record.out_trade_no):
            await _ask(reconcile, record)
    if orders or refunds:
        log.info("sweep: checked %d unpaid orders and %d open refunds", len(orders), len(refunds))
    return len(orders) + len(refunds)


async def _ask(reconcile, record):
    """One order's or refund's question to WeChat; a failure logged (the next sweep asks again)."""
    try:
        await reconcile(record)
    except (WeChatError, ServiceError) as exc:
        log.warning("sweep: %s: %s", getattr(record, "out_refund_no", record.out_trade_no), exc)

"""Business rules: login, server-priced orders, payment params, notifications, reconciliation, refunds.

No HTTP here (server/http/ translates), no wire format (server/wechat/: the PayClient), no
SQL (the Store); which state may follow which is server/domain.py's table. Service is the
one object the handlers talk to; each part is a module of this package.
"""
import time

from server.service import sweep as sweeping
from server.service.common import ServiceError
from server.service.notelog import NoteLog
from server.service.notifications import Notifications
from server.service.orders import Orders
from server.service.reconciliation import Reconciliation
from server.service.refunds import Refunds
from server.service.sessions import Sessions
from server.wechat import PAYMENT, REFUND_RESULT

__all__ = ["Service", "ServiceError"]


class Service:
    """The parts composed: sessions, orders, notifications, refunds, the sweep."""

    def __init__(self, config, store, wechat, catalog, clock=time.time):
        self.config, self.store, self.wechat, self.catalog, self.clock = config, store, wechat, catalog, clock
        self.sessions, self.orders = Sessions(self), Orders(self)
        self.notifications, self.refunds = Notifications(self), Refunds(self)
        self.reconciliation, self.notelog = Reconciliation(self), NoteLog(self)
        # what the handlers call, by part
        self.login, self.caller, self.authenticate = self.sessions.login, self.sessions.caller, self.sessions.authenticate
        self.create_order, self.get_order, self.list_orders = (self.orders.create_order, self.orders.get_order,
                                                               self.orders.list_orders)
        self.repay, self.close, self.reconcile = self.orders.repay, self.orders.close, self.orders.reconcile
        self.refund, self.admin_order, self.open_refunds = (self.refunds.refund, self.refunds.admin_order,
                                                            self.refunds.open_refunds)
        self.reconcile_refund, self.refunds_to_show = self.refunds.reconcile_refund, self.refunds.refunds_to_show

    async def handle_notify(self, body):
        """A v2 payment notification: the pay client's XML reply for WeChat."""
        return await self.notifications.v2(PAYMENT, body)

    async def handle_refund_notify(self, body):
        """A v2 refund notification: the pay client's XML reply for WeChat."""
        return await self.notifications.v2(REFUND_RESULT, body)

    async def handle_notify_v3(self, headers, body):
        """A v3 notification, payment or refund: returns once applied and committed;
        NotificationRefused (its status) with nothing stored but its entry in the log."""
        await self.notifications.v3(headers, body)

    async def sweep(self, limit=sweeping.SWEEP_BATCH):
        """Ask WeChat about unpaid orders and open refunds whose notification is late: how many."""
        checked = await sweeping.sweep(self.store, self.clock, self.reconcile, self.reconcile_refund, limit)
        await self.notelog.prune()
        return checked

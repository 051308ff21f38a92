"""The backend as one object: App owns the store, the WeChat client, the service and the
background sweep, and is started and stopped as one; make_app() gives its Tornado
Application (for tests and tools that serve it themselves)."""
import asyncio
import logging
import time

import tornado.web

from server import logs, metrics
from server.catalog import Catalog
from server.config import PAY_NOTIFY_PATH_V3, REFUND_NOTIFY_PATH_V3
from server.http import handlers, notelog, scrape
from server.service import Service
from server.store import StoreError, open_store, open_waiting
from server.wechat import make_client

log = logging.getLogger("server.app")

TRADE_NO = r"([^/]{1,64})"
DAY = r"([^/]{1,32})"   # a reconciliation's date (yyyy-MM-dd; the handler says what else is wrong)
NOTE_ID = r"([^/]{1,40})"   # a notification log entry's id (the service says what else is wrong)
DRAIN_SECONDS = 10.0


class App:
    """config -> the object graph. `await start()` opens the store (waiting up to DATABASE_WAIT
    for a database not reachable yet) and starts the sweep (every `sweep_interval` seconds, 0:
    never), which also starts the daily reconciliation when it is due; `await stop()` ends the
    sweep, waits for requests in flight, closes the WeChat client and the store."""

    def __init__(self, config, store=None, wechat=None, catalog=None, clock=time.time, sweep_interval=0,
                 metrics_route=True):
        metrics.setup()   # one process, unless --processes N's supervisor has already set it up
        if catalog is None:
            catalog = Catalog.from_file(config.catalog_file) if config.catalog_file else Catalog.demo()
        self.clock = clock
        self.store = store or open_store(config.database_url, clock=clock, pool_size=config.database_pool_size,
                                         timeout=config.database_timeout)
        self.wechat = wechat or make_client(config)
        self.service = Service(config, self.store, self.wechat, catalog, clock)
        self.sweep_interval = sweep_interval
        self.database_wait = config.database_wait
        self.web = _web_application(self, metrics_route)
        self._stopping = asyncio.Event()
        self._sweeper = self._daily = None

    async def start(self):
        await open_waiting(self.store, self.database_wait)
        await self.wechat.start()
        if self.sweep_interval > 0:
            self._sweeper = asyncio.create_task(self._sweep_forever())

    async def stop(self, drain=DRAIN_SECONDS):
        self._stopping.set()
        if self._sweeper is not None:
            await self._sweeper
        if self._daily is not None:   # its day's lease runs out and another process (or the next start) takes it
            self._daily.cancel()
            await asyncio.gather(self._daily, return_exceptions=True)
        await self._drain(drain)
        self.wechat.close()
        await self.store.close()

    async def _sweep_forever(self):
        """Every sweep_interval seconds, ask WeChat about orders and refunds whose notification is late."""
        while not self._stopping.is_set():
            try:
                await asyncio.wait_for(self._stopping.wait(), self.sweep_interval)
            except asyncio.TimeoutError:
                self._start_daily()
                try:
                    await self.service.sweep()
                except StoreError:
                    pass   # the database is down: the store logs the outage once, the next sweep tries again
                except Exception:  # a sweep must never end the server; the next one tries again
                    log.exception("sweep failed")

    def _start_daily(self):
        """The daily reconciliation (RECONCILE_DAILY), checked each sweep, in a task of its own:
        downloading a bill must not hold up the sweep, nor one run start while another is going."""
        if self.service.config.reconcile_daily and (self._daily is None or self._daily.done()):
            self._daily = asyncio.create_task(self._reconcile_daily())

    async def _reconcile_daily(self):
        try:
            await self.service.reconciliation.daily()
        except StoreError:
            pass   # the store logs the outage; the day is claimed again once its lease runs out
        except Exception:  # never the end of the server: the next sweep tries again
            log.exception("daily reconciliation failed")

    async def _drain(self, timeout):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.web.inflight and loop.time() < deadline:
            await asyncio.sleep(0.05)


def make_app(config, store=None, wechat=None, catalog=None, clock=time.time):
    """The backend's Tornado Application; `web.service` is the service and `web.backend` the App
    (call `await web.backend.start()` before serving, or open `web.service.store` yourself)."""
    return App(config, store, wechat, catalog, clock).web


# The backend's routes, (path pattern, handler); server/http/openapi.json documents each one
# (tests/test_openapi.py checks that the two agree).
ROUTES = [
    (r"/api/login", handlers.LoginHandler),
    (r"/api/products", handlers.ProductsHandler),
    (r"/api/orders", handlers.OrdersHandler),
    (r"/api/orders/%s" % TRADE_NO, handlers.OrderHandler),
    (r"/api/orders/%s/payment" % TRADE_NO, handlers.PaymentHandler),
    (r"/api/orders/%s/close" % TRADE_NO, handlers.CloseHandler),
    (r"/wechat/pay/notify", handlers.PayNotifyHandler),
    (r"/wechat/refund/notify", handlers.RefundNotifyHandler),
    (PAY_NOTIFY_PATH_V3, handlers.V3NotifyHandler),
    (REFUND_NOTIFY_PATH_V3, handlers.V3NotifyHandler),
    (r"/admin/orders/%s" % TRADE_NO, handlers.AdminOrderHandler),
    (r"/admin/orders/%s/refunds" % TRADE_NO, handlers.AdminRefundsHandler),
    (r"/admin/refunds", handlers.AdminRefundListHandler),
    (r"/admin/reconciliations", handlers.AdminReconciliationsHandler),
    (r"/admin/reconciliations/%s" % DAY, handlers.AdminReconciliationHandler),
    (r"/admin/notifications", notelog.AdminNotificationsHandler),
    (r"/admin/notifications/%s/replay" % NOTE_ID, notelog.AdminReplayHandler),
    (r"/healthz", handlers.HealthHandler),
    (r"/openapi\.json", handlers.OpenAPIHandler),
    (r"/metrics", scrape.MetricsHandler),   # not here when METRICS_LISTEN serves it on its own address
]


def _web_application(backend, metrics_route):
    """metrics_route: GET /metrics here (behind the admin token); off when METRICS_LISTEN serves it."""
    args = {"service": backend.service}
    routes = [r for r in ROUTES if metrics_route or r[1] is not scrape.MetricsHandler]
    web = tornado.web.Application(
        [(path, handler, args) for path, handler in routes],
        default_handler_class=handlers.NotFoundHandler, default_handler_args=args, log_function=logs.access)
    web.service = backend.service
    web.backend = backend
    web.inflight = set()  # handlers still working on a request (see App.stop)
    return web

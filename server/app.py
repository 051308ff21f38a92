"""make_app(config): builds the object graph and the Tornado application."""
import time

import tornado.web

from server import handlers
from server.catalog import Catalog
from server.service import Service
from server.store import open_store
from server.wechat import WeChatClient

TRADE_NO = r"([^/]{1,64})"


def make_app(config, store=None, wechat=None, catalog=None, clock=time.time):
    """The backend application; `app.service` holds the service. Open the store before serving."""
    if catalog is None:
        catalog = Catalog.from_file(config.catalog_file) if config.catalog_file else Catalog.demo()
    service = Service(config, store or open_store(config.database_url),
                      wechat or WeChatClient(config), catalog, clock)
    args = {"service": service}
    routes = [
        (r"/api/login", handlers.LoginHandler),
        (r"/api/products", handlers.ProductsHandler),
        (r"/api/orders", handlers.OrdersHandler),
        (r"/api/orders/%s" % TRADE_NO, handlers.OrderHandler),
        (r"/api/orders/%s/payment" % TRADE_NO, handlers.PaymentHandler),
        (r"/api/orders/%s/close" % TRADE_NO, handlers.CloseHandler),
        (r"/wechat/pay/notify", handlers.PayNotifyHandler),
        (r"/wechat/refund/notify", handlers.RefundNotifyHandler),
        (r"/admin/orders/%s" % TRADE_NO, handlers.AdminOrderHandler),
        (r"/admin/orders/%s/refunds" % TRADE_NO, handlers.AdminRefundsHandler),
        (r"/admin/refunds", handlers.AdminRefundListHandler),
        (r"/healthz", handlers.HealthHandler),
    ]
    app = tornado.web.Application(
        [(path, handler, args) for path, handler in routes],
        default_handler_class=handlers.NotFoundHandler, default_handler_args=args)
    app.service = service
    app.inflight = set()  # handlers still working on a request
    return app

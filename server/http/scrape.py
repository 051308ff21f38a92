"""GET /metrics: the Prometheus scrape, behind the admin token on the API's port, or open on METRICS_LISTEN's own."""
import tornado.web

from server import logs, metrics
from server.http.handlers import AdminHandler, NotFoundHandler


class MetricsHandler(AdminHandler):
    """GET /metrics on the API's port: `Authorization: Bearer <ADMIN_TOKEN>`, as /admin/*."""
    open = False

    def get(self):
        if not self.open:
            self.require_admin()
        content_type, body = metrics.scrape()
        self.set_header("Content-Type", content_type)
        self.finish(body)


class OpenMetricsHandler(MetricsHandler):
    """GET /metrics on METRICS_LISTEN's address: whoever reaches that address may read it."""
    open = True


def metrics_application():
    """The Application of METRICS_LISTEN's address: /metrics and nothing else (404 JSON)."""
    args = {"service": None}
    web = tornado.web.Application([(r"/metrics", OpenMetricsHandler, args)], default_handler_class=NotFoundHandler,
                                  default_handler_args=args, log_function=logs.access)
    web.inflight = set()   # BaseHandler's count of requests in flight
    return web

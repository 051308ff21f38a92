"""The admin API of the notification log: GET /admin/notifications, POST /admin/notifications/<id>/replay."""
from server import views
from server.http.handlers import AdminHandler


class AdminNotificationsHandler(AdminHandler):
    """GET /admin/notifications[?out_trade_no=&verdict=&limit=50&before=<cursor>], newest first."""

    async def get(self):
        self.require_admin()
        entries, cursor = await self.service.notelog.notifications(
            self.page_limit(50), self.get_query_argument("before", None),
            self.get_query_argument("out_trade_no", None), self.get_query_argument("verdict", None))
        self.send_json(200, views.page([views.notification(e) for e in entries], cursor, "notifications"))


class AdminReplayHandler(AdminHandler):
    """POST /admin/notifications/<id>/replay: the stored notification verified and applied
    again; its new verdict (an applied one: duplicate, nothing changed)."""

    async def post(self, id):
        self.require_admin()
        stored, verdict, reason = await self.service.notelog.replay(id)
        self.send_json(200, views.replayed(stored, verdict, reason))

"""What both pay clients share: the connection pool to WeChat, code2session, the retry policy, v2 notifications."""
import asyncio
import json
import urllib.parse
from urllib.parse import urlsplit

from server import metrics
from server.descriptors import default_connections_per_host
from server.wechat import AnswerTooLarge, UpstreamError, UpstreamTimeout, WeChatRefused, guidance, upstream
from server.wechat import PAYMENT
from server.wechat.retry import Retry, with_retries
from server.wechat.v2 import notify

_HEADERS = {"Content-Type": "text/xml; charset=utf-8", "User-Agent": "wxpay-tornado"}
_RETRY_LOGIN = -1


class BaseClient:
    """What both API versions share: the connection pool, code2session, retries (`attempts`
    calls per request at most, the PayClient retry policy)."""

    def __init__(self, config, attempts=3, backoff=0.2):
        self.config = config
        self.attempts = attempts
        self.backoff = backoff
        per_host = config.connections_per_host or default_connections_per_host()
        self.http = upstream.Pool(connect_timeout=min(config.timeout, 5.0), max_per_host=per_host,
                                  proxy=upstream.Proxy(config.proxy_url or None), watch=metrics.pool_changed)
        self._tls = {}   # the TLS contexts, made at the first HTTPS call (loading the CAs costs ~20 ms)

    def tls(self, url, client_cert=False):
        """The TLS context of a call to url: None for plain HTTP; the client certificate's when
        asked for and configured."""
        if not url.startswith("https:"):
            return None
        with_cert = bool(client_cert and self.config.cert_file)
        if with_cert not in self._tls:
            config = self.config
            self._tls[with_cert] = (upstream.client_ssl_context(config.ca_file, config.cert_file, config.key_file)
                                    if with_cert else upstream.client_ssl_context(config.ca_file))
        return self._tls[with_cert]

    async def start(self):
        """Background work the client needs (none for v2)."""

    def close(self):
        self.http.close()

    # -- login -------------------------------------------------------------------
    async def code2session(self, code):
        """{'openid', 'session_key', 'unionid'?} for a wx.login code."""
        query = urllib.parse.urlencode({
            "appid": self.config.appid, "secret": self.config.app_secret,
            "js_code": code, "grant_type": "authorization_code"})
        url = "%s/sns/jscode2session?%s" % (self.config.login_base_url.rstrip("/"), query)
        return await self._with_retries(lambda: self._login_once(url), "jscode2session")

    async def _login_once(self, url):
        body = await self._fetch("GET", url, None, "jscode2session")
        try:
            answer = json.loads(body)
        except ValueError:
            raise UpstreamError("jscode2session answered something that is not JSON") from None
        if not isinstance(answer, dict):
            raise UpstreamError("jscode2session answered unexpected JSON")
        errcode = answer.get("errcode", 0)
        if errcode == _RETRY_LOGIN:
            return Retry(WeChatRefused(errcode, "WeChat system busy (errcode -1)"))
        if errcode not in (0, None):
            raise WeChatRefused(errcode, "jscode2session errcode %s" % errcode)
        if not answer.get("openid") or not answer.get("session_key"):
            raise UpstreamError("jscode2session answer lacks openid or session_key")
        return answer

    # -- v2 notifications: a v3 backend still takes them for orders made under v2 ----------
    async def open_v2_notification(self, kind, body, order_of):
        if kind == PAYMENT:
            return await notify.open_payment(self.config, body, order_of)
        return notify.open_refund(self.config, body)

    def v2_reply(self, problem):
        return notify.reply(problem)

    # -- transport ---------------------------------------------------------------
    async def _with_retries(self, once, name, endpoint=None):
        """A call, its retries included, timed as one (the metrics' endpoint: `endpoint`, else `name`)."""
        async with metrics.WeChatCall(endpoint or name):
            return await with_retries(once, name, self.attempts, self.backoff)

    async def _fetch(self, method, url, body, name, client_cert=False, max_body=upstream.MAX_BODY_BYTES):
        status, answer = await self._exchange(name, url, max_body, self.http.fetch(
            method, url, body, _HEADERS, self.config.timeout, self.tls(url, client_cert), max_body))
        if status != 200:
            raise UpstreamError("%s answered HTTP %d" % (name, status))
        return answer

    async def _exchange(self, name, url, max_body, fetching):
        """Await a call of the pool (`fetching`, not awaited yet); what went wrong in transport
        as the PayClient's errors."""
        try:
            return await fetching
        except asyncio.TimeoutError:
            raise UpstreamTimeout("%s: WeChat did not answer in time" % name) from None
        except upstream.TooLarge:
            raise AnswerTooLarge("%s answered more than %d bytes" % (name, max_body)) from None
        except (OSError, upstream.BadResponse) as exc:
            raise UpstreamError(await self._unreachable(name, url, exc)) from None

    async def _unreachable(self, name, url, exc):
        """What a call that got no answer says: the URL (without its query: jscode2session's carries
        the AppSecret), what answered there, and which setting to look at."""
        parts = urlsplit(url)
        proxied = self.http.proxy.for_target(parts.scheme, parts.hostname, parts.port) is not None
        login = url.startswith(self.config.login_base_url.rstrip("/") + "/sns/")
        variable = "WECHAT_LOGIN_BASE_URL" if login else "WECHAT_PAY_BASE_URL"
        return await guidance.unreachable(name, url, exc, variable, proxied)

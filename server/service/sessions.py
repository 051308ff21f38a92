"""Login: wx.login codes exchanged for opaque session tokens, and the caller of a request."""
import collections
import hashlib
import re
import secrets

from server.service.common import Part, ServiceError
from server.wechat import WeChatRefused

LOGIN_REFUSALS = {40029, 40163, 40226}
SESSION_CACHE = 10000       # sessions kept in memory (LRU)
_CODE = re.compile(r"[!-~]+")  # wx.login codes: printable ASCII, no spaces or controls


class Sessions(Part):
    def __init__(self, service):
        super().__init__(service)
        # token hash -> Session; sessions never change once issued, so a cache is safe
        self._sessions = collections.OrderedDict()

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
        if not (isinstance(code, str) and 0 < len(code) <= 128 and _CODE.fullmatch(code)):
            raise ServiceError(400, "INVALID_CODE", "code must be the string from wx.login")
        try:
            return await self.wechat.code2session(code)
        except WeChatRefused as exc:
            if exc.wechat_code in LOGIN_REFUSALS:
                raise ServiceError(401, "LOGIN_FAILED", "WeChat refused the login code",
                                   exc.wechat_code) from None
            raise

    async def caller(self, token, code=None):
        """The openid of a request: its session token, or (the one-call flow, only without a
        token) a wx.login code exchanged on the spot."""
        if token is None and code is not None:
            return (await self.code2session(code))["openid"]
        return await self.authenticate(token)

    async def authenticate(self, token):
        """The openid behind a session token; 401 when unknown or expired."""
        if token:
            key = _token_hash(token)
            session = self._sessions.get(key) or await self.store.get_session(key, self.clock())
            if session and session.expires_at > self.clock():
                self._remember(key, session)
                return session.openid
        raise ServiceError(401, "UNAUTHORIZED", "missing, unknown or expired session token")

    def _remember(self, key, session):
        self._sessions[key] = session
        self._sessions.move_to_end(key)
        if len(self._sessions) > SESSION_CACHE:
            self._sessions.popitem(last=False)


def _token_hash(token):
    # only a hash is stored, so a leaked database holds no usable session tokens
    return hashlib.sha256(token.encode("utf-8")).hexdigest()

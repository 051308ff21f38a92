"""WeChat's login endpoints: /sns/jscode2session (code2Session) and /cgi-bin/token; query
parameters in, JSON out, HTTP 200 even on errors."""
import json
import re
import secrets

from simulator.endpoint import WeChatEndpoint
from simulator.rules import ACCESS_TOKEN_TTL, LOGIN_ERRMSG, LoginError

# A js_code "errcode-<N>" makes jscode2session fail with errcode N (a backend's error paths).
FORCED_ERRCODE = re.compile(r"^errcode-(-?[0-9]{1,9})$")
# What the `malformed` fault answers: cut off mid-document, like a broken proxy.
MALFORMED_JSON = b'{"session_key":"tiihtNczf5v6AKRyjwEUhQ==","openid":"oUpF8uMu'


def rid():
    """WeChat appends a request id to every errmsg."""
    return "%s-%s-%s" % (secrets.token_hex(4), secrets.token_hex(4), secrets.token_hex(4))


class JSONApiHandler(WeChatEndpoint):
    """Login-side WeChat APIs: query parameters in, JSON out, HTTP 200 even on errors."""
    malformed = MALFORMED_JSON
    content_type = "application/json; encoding=utf-8"

    async def get(self, prefix=None):
        if await self.apply_faults():
            return
        try:
            self.answer(self.rules())
        except LoginError as exc:
            self.entry["error"] = exc.errcode
            self.answer({"errcode": exc.errcode, "errmsg": "%s, rid: %s" % (exc.errmsg, rid())})

    post = get

    def param(self, name):
        return self.get_argument(name, "").strip()

    def answer(self, data):
        self.set_header("Content-Type", self.content_type)
        self.finish(json.dumps(data, ensure_ascii=False))

    def write_error(self, status_code, **kwargs):
        self.set_header("Content-Type", self.content_type)
        self.finish(json.dumps({"errcode": -1, "errmsg": "system error, rid: " + rid()}))


class Code2SessionHandler(JSONApiHandler):
    api = "/sns/jscode2session"
    # Real jscode2session answers JSON labelled text/plain (Spring's RestTemplate trips on it).
    content_type = "text/plain"

    def rules(self):
        appid, secret, js_code = self.param("appid"), self.param("secret"), self.param("js_code")
        require_login_params(appid, secret, js_code)
        self.state.check_app(appid, secret)
        forced = FORCED_ERRCODE.match(js_code)
        if forced:
            errcode = int(forced.group(1))
            raise LoginError(errcode, LOGIN_ERRMSG.get(errcode, "forced by js_code " + js_code))
        if self.system_error:
            raise LoginError(-1, LOGIN_ERRMSG[-1])
        # An access_token parameter (wechatpy, WxJava add one) is ignored, as at WeChat.
        return self.state.exchange_code(appid, js_code)


def require_login_params(appid, secret, js_code):
    if not appid:
        raise LoginError(41002, "appid missing")
    if not secret:
        raise LoginError(41004, "appsecret missing")
    if not js_code:
        raise LoginError(41008, "missing code")


class TokenHandler(JSONApiHandler):
    api = "/cgi-bin/token"

    def rules(self):
        appid, secret = self.param("appid"), self.param("secret")
        if self.param("grant_type") != "client_credential":
            raise LoginError(40002, "invalid grant_type")
        require_login_params(appid, secret, "-")
        self.state.check_app(appid, secret)
        if self.system_error:
            raise LoginError(-1, LOGIN_ERRMSG[-1])
        return {"access_token": secrets.token_urlsafe(96), "expires_in": ACCESS_TOKEN_TTL}

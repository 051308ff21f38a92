"""API v3 request authentication as WeChat does it: the Authorization header's merchant,
serial, timestamp, signature and nonce; and, for the request log, the explanation of a failed
check (the string that should have been signed, and the common mistake that matches)."""
import json
import time

from simulator.v3 import rules as v3rules, wire as v3wire
from simulator.v3.rules import V3Error

EXPLAINED_BODY = 4000       # characters of the body shown in a signature explanation
# WeChat's SIGN_ERROR messages; what exactly failed goes to the request log.
SIGN_MESSAGES = {
    "authorization": "Http头Authorization值格式错误，请参考《微信支付商户REST API签名规则》",
    "mchid": "商户号与签名所用的商户号不一致",
    "serial_no": "商户证书序列号有误。请使用签名私钥匹配的证书序列号",
    "timestamp": "请求头中的时间戳与当前时间相差过大",
    "signature": "错误的签名，验签失败",
    "nonce": "请求的随机串已使用过（重放请求）",
}


class Authentication:
    """V3Endpoint's checks of who signed the request (it sets self.auth and self.merchant)."""

    def check_headers(self):
        """WeChat's gateway refuses a request without Accept or User-Agent before anything else
        (a common first error of hand-written clients)."""
        if not self.request.headers.get("Accept") or not self.request.headers.get("User-Agent"):
            raise V3Error("INVALID_REQUEST", "Http头缺少Accept或User-Agent", status=400,
                          detail="the request has no %s header; WeChat requires Accept (application/json) "
                                 "and User-Agent" % " or ".join(
                                     h for h in ("Accept", "User-Agent") if not self.request.headers.get(h)))

    def authenticate(self):
        """The merchant's signature, checked as WeChat checks it, else 401 SIGN_ERROR with
        the request log's explanation of which check failed and what should be signed."""
        header = self.request.headers.get("Authorization", "")
        try:
            self.auth = auth = v3wire.parse_authorization(header)
        except v3wire.AuthorizationError as exc:
            raise self.sign_error("authorization", str(exc))
        self.entry["mchid"] = auth["mchid"]
        self.merchant = self.state.v3.merchant(auth["mchid"])
        if self.merchant is None:
            raise self.sign_error("mchid", "mchid %s has no v3 API certificate at this "
                                  "simulator (it knows %s)" % (auth["mchid"], ", ".join(
                                      self.state.v3.merchants)))
        if not v3wire.same_serial(auth["serial_no"], self.merchant.serial_no):
            raise self.sign_error("serial_no", self.serial_problem(auth["serial_no"]))
        self.check_timestamp(auth["timestamp"])
        if not v3wire.verify(self.merchant.public_key, signed_message(self.request, auth),
                             auth["signature"]):
            raise self.sign_error("signature", "the signature does not verify with the public "
                                  "key of merchant certificate %s" % self.merchant.serial_no)
        if self.state.v3_nonce_seen(auth["mchid"], auth["nonce_str"]):
            raise self.sign_error("nonce", "nonce_str %s was already used by a request of "
                                  "merchant %s within %d minutes: a replay (sign every request "
                                  "with a fresh nonce)" % (auth["nonce_str"], auth["mchid"],
                                                           v3rules.NONCE_MEMORY // 60))
        self.state.remember_v3_nonce(auth["mchid"], auth["nonce_str"])
        self.entry["signature"] = "ok"

    def serial_problem(self, serial):
        v3 = self.state.v3
        if v3wire.same_serial(serial, v3.public_key_id) or v3wire.same_serial(
                serial, v3.platform_serial):
            return ("serial_no %s is WeChat Pay's (its public key id or platform certificate), "
                    "not the merchant's: send the serial of your merchant API certificate, %s"
                    % (serial, self.merchant.serial_no))
        return ("serial_no %s is not the serial of merchant %s's API certificate (%s)"
                % (serial, self.merchant.mchid, self.merchant.serial_no))

    def check_timestamp(self, text):
        if not (text.isascii() and text.isdigit() and len(text) <= 13):
            raise self.sign_error("timestamp", "timestamp %r is not a number of seconds" % text[:32])
        ts = int(text)
        if len(text) == 13:
            raise self.sign_error("timestamp", "timestamp %s has 13 digits: milliseconds; "
                                  "WeChat wants seconds" % text)
        # within 5 minutes of the simulator's clock; while POST /sim/clock has moved it, of
        # real time too (so that expiring a prepay_id does not make every request stale)
        off = min(abs(ts - time.time()), abs(ts - self.state.clock.now()))
        if off > v3rules.SIGNATURE_WINDOW:
            raise self.sign_error("timestamp", "timestamp %s is %d s away from the simulator's "
                                  "clock (%d); WeChat allows %d s" % (
                                      text, off, int(self.state.clock.now()),
                                      v3rules.SIGNATURE_WINDOW))

    def sign_error(self, check, reason):
        self.entry["signature"] = "bad"
        self.entry["explanation"] = explain(self.request, self.auth, self.merchant, check,
                                            reason)
        return V3Error("SIGN_ERROR", SIGN_MESSAGES[check], detail=reason)

    def same_mchid(self, mchid, where):
        """The request's mchid (body or query) is the signer's, or 401 SIGN_ERROR."""
        if mchid != self.auth["mchid"]:
            raise self.sign_error("mchid", "the Authorization is merchant %s's, but %s names "
                                  "mchid %s" % (self.auth["mchid"], where, mchid))


def explain(request, auth, merchant, check, reason):
    """Which check failed, the string that should have been signed, and hints."""
    explanation = {"sign_type": "SHA256withRSA", "failed_check": check,
                   "hints": [reason]}
    if auth is None:
        return explanation
    explanation["string_to_sign"] = _shown(signed_message(request, auth))
    explanation["received_sign"] = auth["signature"]
    explanation["authorization"] = {k: auth[k] for k in ("mchid", "serial_no",
                                                         "timestamp", "nonce_str")}
    if check == "signature":
        explanation["hints"].extend(signature_hints(request, auth, merchant))
    return explanation


def signed_message(request, auth, method=None, url=None, body=None):
    """What the request should have signed; method, url or body as given instead."""
    return v3wire.request_message(
        method or request.method, request.uri if url is None else url,
        auth["timestamp"], auth["nonce_str"], request.body if body is None else body)


def signature_hints(request, auth, merchant):
    raw = v3wire.decode_signature(auth["signature"])
    if raw is None:
        return ["the signature is not base64"]
    if len(raw) != v3wire.RSA_SIGNATURE_BYTES:
        return ["the signature has %d bytes; a 2048-bit RSA key signs %d" % (
            len(raw), v3wire.RSA_SIGNATURE_BYTES)]
    hints = ["the signature matches when " + label
             for label, message in mistakes(request, auth)
             if v3wire.verify(merchant.public_key, message, auth["signature"])]
    return hints or ["no common mistake matched: sign METHOD\\nURL\\ntimestamp\\nnonce\\n"
                     "body\\n (URL = path and query exactly as sent, body = the exact bytes "
                     "sent) with the private key of certificate %s" % merchant.serial_no]


def mistakes(request, auth):
    """(what went wrong, the message signed then) for mistakes seen in the wild."""
    def signed(**changed):
        return signed_message(request, auth, **changed)
    path = request.uri.split("?", 1)[0]
    if path != request.uri:
        yield "the query string is left out of the URL", signed(url=path)
    yield ("the URL includes the host",
           signed(url="%s://%s%s" % (request.protocol, request.host, request.uri)))
    if request.uri.startswith("/v3/"):
        yield "/v3 is left out of the URL", signed(url=request.uri[3:])
    yield "the method is lowercase", signed(method=request.method.lower())
    if request.body:
        yield "the body is left out (signed as empty)", signed(body=b"")
        compact = _compact(request.body)
        if compact is not None and compact != request.body:
            yield ("the body was signed before it was re-serialised: the signature is "
                   "over the compact JSON, the body sent differs (sign the exact bytes "
                   "you send)", signed(body=compact))
    yield "the last \\n is left out", signed()[:-1]
    yield ("timestamp and nonce are swapped", v3wire.request_message(
        request.method, request.uri, auth["nonce_str"], auth["timestamp"], request.body))


def _compact(body):
    try:
        return json.dumps(json.loads(body), ensure_ascii=False,
                          separators=(",", ":")).encode("utf-8")
    except ValueError:
        return None


def _shown(message):
    text = message.decode("utf-8", "replace")
    if len(text) > EXPLAINED_BODY:
        return text[:EXPLAINED_BODY] + "…(%d more characters)" % (len(text) - EXPLAINED_BODY)
    return text

"""Request, answer and notification bodies as the simulator keeps them: text, capped, secrets masked."""
import re

BODY_LIMIT = 8000       # characters of one body kept (a bill download can be megabytes)
# Fields that carry a key or a token, whoever's: masked wherever a body names them.
SECRET_FIELDS = "key|sandbox_signkey|session_key|access_token|secret|appsecret|apiv3_key"
_XML_FIELD = re.compile(r"(<(%s)>(?:<!\[CDATA\[)?)(.*?)((?:\]\]>)?</\2>)" % SECRET_FIELDS, re.S)
_JSON_FIELD = re.compile(r'("(%s)"\s*:\s*")((?:[^"\\]|\\.)*)(")' % SECRET_FIELDS)
TEXT_TYPES = ("text", "json", "xml", "x-www-form-urlencoded")


def mask_secret(secret):
    """A key or AppSecret as the console shows it: the first and last 4 characters, stars
    between (fewer shown for short secrets); never the whole secret."""
    secret = secret or ""
    n = len(secret)
    shown = 4 if n >= 16 else 2 if n >= 8 else 0
    if not shown:
        return "*" * n
    return secret[:shown] + "*" * (n - 2 * shown) + secret[-shown:]


def secrets_of(state):
    """The configured secrets (AppSecrets, API keys, sandbox keys, APIv3 keys), longest first."""
    config = state.config
    values = [a.secret for a in config.apps.values()]
    for merchant in config.merchants.values():
        values += [merchant.api_key, merchant.sandbox_key]
    if state.v3 is not None:
        values += [m.apiv3_key for m in state.v3.merchants.values()]
    return sorted({v for v in values if v}, key=len, reverse=True)


def masked(text, secrets):
    """text with every configured secret, and every secret-named field's value, masked."""
    for secret in secrets:
        text = text.replace(secret, mask_secret(secret))
    text = _XML_FIELD.sub(lambda m: m.group(1) + mask_secret(m.group(3)) + m.group(4), text)
    return _JSON_FIELD.sub(lambda m: m.group(1) + mask_secret(m.group(3)) + m.group(4), text)


def as_text(data, content_type=""):
    """A body as text; a binary one (a gzip bill) as its size and type."""
    if not data:
        return ""
    if content_type and not any(t in content_type for t in TEXT_TYPES):
        return "(%d bytes of %s)" % (len(data), content_type.split(";")[0])
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)


def kept(state, data, content_type=""):
    """What the request log or the notification log keeps of a body: masked, then capped
    (so that no cut leaves part of a secret unmasked)."""
    text = masked(as_text(data, content_type), secrets_of(state))
    if len(text) > BODY_LIMIT:
        text = text[:BODY_LIMIT] + "\n... (%d characters in all)" % len(text)
    return text


class BodyLog:
    """A handler mixin: its request-log entry (self.entry, when it has one) keeps the request's
    body, the answer's body and HTTP status when the request ends (a dropped one has none)."""

    answer_limit = BODY_LIMIT * 4      # bytes of the answer collected (UTF-8 is up to 4)

    def write(self, chunk):
        super().write(chunk)
        answer = self.__dict__.setdefault("_answer", [])
        if self._write_buffer and sum(map(len, answer)) < self.answer_limit:
            answer.append(self._write_buffer[-1])

    def on_finish(self):
        entry = getattr(self, "entry", None)
        if entry is None:
            return
        dropped = getattr(self, "dropped", False)
        entry["status"] = None if dropped else self.get_status()
        entry["request_body"] = kept(self.state, self.request.body,
                                     self.request.headers.get("Content-Type", ""))
        answer = b"" if dropped else b"".join(self.__dict__.get("_answer", []))
        entry["answer_body"] = kept(self.state, answer, self._headers.get("Content-Type", ""))
        self.state.changed("requests")

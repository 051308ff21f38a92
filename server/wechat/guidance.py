"""What a failed WeChat call says: the URL tried (never its query or credentials), what answered there, the next step."""
import asyncio
import ssl
from urllib.parse import urlsplit

PROBE_SECONDS = 1.0   # a TLS handshake with a local port takes milliseconds
START_SIMULATOR = "is the simulator running? Start `python run_server.py --simulator` (or `python run_simulator.py --tls`)"


def shown_url(url):
    """scheme://host:port/path of url: no user, password or query (jscode2session's holds the AppSecret)."""
    parts = urlsplit(url)
    host = "[%s]" % parts.hostname if ":" in (parts.hostname or "") else parts.hostname
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return "%s://%s:%d%s" % (parts.scheme, host, port, parts.path or "/")


def is_wechat(url):
    """Whether url is at WeChat's own hosts (else a simulator or a stand-in of the developer's)."""
    host = (urlsplit(url).hostname or "").lower()
    return host == "qq.com" or host.endswith(".qq.com")


async def unreachable(name, url, exc, variable, proxied=False):
    """The message of a call to url that got no answer (`exc`); `variable` is the base URL's setting."""
    where = "%s: cannot reach WeChat at %s" % (name, shown_url(url))
    kind = type(exc).__name__
    if is_wechat(url):
        return "%s (%s): check the network, DNS and WECHAT_PROXY" % (where, kind)
    parts = urlsplit(url)
    if isinstance(exc, ConnectionRefusedError) and not proxied:
        return "%s: nothing listens there (%s); %s, or set %s to where WeChat answers" % (
            where, kind, START_SIMULATOR, variable)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ("%s: its certificate is not trusted (%s); set WECHAT_CA_FILE to the simulator's CA (ca.pem in its "
                "TLS directory, sim-tls/ by default)" % (where, exc.verify_message or kind))
    if isinstance(exc, ssl.SSLError) and exc.reason == "WRONG_VERSION_NUMBER":
        return "%s: it speaks plain HTTP, not HTTPS: use http://%s in %s" % (where, parts.netloc, variable)
    if parts.scheme == "http" and not proxied and await speaks_tls(parts.hostname, parts.port or 80):
        return "%s (%s): the simulator speaks HTTPS here: use https://%s in %s" % (where, kind, parts.netloc, variable)
    return "%s (%s); %s, or check %s" % (where, kind, START_SIMULATOR, variable)


async def speaks_tls(host, port):
    """Whether host:port completes a TLS handshake (certificates not checked: only the protocol matters)."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        async with asyncio.timeout(PROBE_SECONDS):
            _, writer = await asyncio.open_connection(host, port, ssl=context)
    except (OSError, asyncio.TimeoutError):
        return False
    writer.close()   # the handshake told us what we wanted; the goodbye need not be awaited
    return True


def sign_error_hint(base_url, fix):
    """What to add to a sign error from base_url: where the simulator explains it, or what to check at WeChat."""
    if is_wechat(base_url):
        return "; " + fix
    base = shown_url(base_url).rstrip("/")
    return ("; see %s/sim/console (or %s/sim/requests) for the string WeChat signed and why it did not match (%s)"
            % (base, base, fix))

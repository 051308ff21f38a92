"""Which Host names may reach /sim/ (a guard against DNS rebinding): loopback, the address the
simulator listens on, and names allowed explicitly (--allow-host)."""
import ipaddress
import re

import tornado.routing

_NAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*")
_PORT = re.compile(r"[0-9]{0,5}")


def split_host(value):
    """'Example.test:9000' -> 'example.test', '[::1]:9000' -> '::1', 'localhost.' ->
    'localhost' (IP addresses in their canonical form); None when value is no host[:port]."""
    if not isinstance(value, str):
        return None
    value = value.strip().lower()
    if value.startswith("["):
        name, bracket, port = value[1:].partition("]")
        if not bracket or not (port == "" or port.startswith(":")):
            return None
        port = port[1:]
    else:
        name, _, port = value.partition(":")
    if not _PORT.fullmatch(port):
        return None
    return canonical(name)


def canonical(name):
    """An IP address in its canonical form, a DNS name without its trailing dot; None for
    anything else."""
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        pass
    name = name[:-1] if name.endswith(".") else name
    return name if _NAME.fullmatch(name) else None


def is_loopback(name):
    """localhost and *.localhost (RFC 6761: never resolved through DNS), 127.0.0.0/8 and ::1
    (also as ::ffff:127.x.y.z)."""
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)


def allowed_name(text):
    """An --allow-host value: a DNS name or an IP address ([IPv6] too), a port ignored;
    ValueError for anything else (a URL, a wildcard, spaces)."""
    name = canonical(text.strip().lower()) if ":" in text and "[" not in text else None
    name = name or split_host(text)
    if not name:
        raise ValueError("%r is not a host name or IP address (no scheme, path or wildcard)"
                         % text)
    return name


class HostPolicy:
    """Loopback names, the listen address as given and the allowed names. Listening on every
    interface (0.0.0.0, ::) allows that address itself (the banner's URL), not every name: a
    LAN address or a tunnel's name is allowed explicitly."""

    def __init__(self, listen_host="127.0.0.1", allow=()):
        names = [allowed_name(listen_host)] if listen_host else []
        self.names = frozenset(names + [allowed_name(text) for text in allow])

    def allows(self, host):
        name = split_host(host)
        return name is not None and (is_loopback(name) or name in self.names)

    def describe(self):
        """One line for a banner."""
        extra = sorted(n for n in self.names if not is_loopback(n))
        return "loopback (localhost, 127.0.0.1, [::1])%s" % "".join(", " + n for n in extra)


def is_sim_path(path):
    return path == "/sim" or path.startswith("/sim/")


class ForeignHost(tornado.routing.Matcher):
    """Matches a request for /sim/ whose Host the policy does not allow (routed first, so no
    handler under /sim/ sees it); WeChat's own paths answer any Host."""

    def __init__(self, policy):
        self.policy = policy

    def match(self, request):
        if is_sim_path(request.path) and not self.policy.allows(request.host):
            return {}
        return None

"""The process's file-descriptor budget, shared by the HTTP server (client connections) and
the upstream pool (connections to WeChat)."""
import resource

FIXED_DESCRIPTORS = 64            # the database (3 files), listening sockets, logs, the event loop


def descriptor_limit():
    """The process's soft RLIMIT_NOFILE (None when unlimited)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def default_max_connections(limit=None):
    """Half the descriptors left after FIXED_DESCRIPTORS: each client connection may be
    matched by one to WeChat (upstream calls are made while a request is handled)."""
    limit = descriptor_limit() if limit is None else limit
    if limit is None:
        return 10000
    return max(16, min(10000, (limit - FIXED_DESCRIPTORS) // 2))


def default_connections_per_host(limit=None):
    """Connections to one WeChat host at most: the upstream half of the descriptors left after
    FIXED_DESCRIPTORS (see default_max_connections), shared by the two WeChat hosts."""
    limit = descriptor_limit() if limit is None else limit
    if limit is None:
        return 1024
    return max(8, min(10000, (limit - FIXED_DESCRIPTORS) // 4))

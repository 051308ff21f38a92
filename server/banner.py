"""run_server.py's start-up banner: where the backend listens, what it speaks, its limits."""
from server import config as server_config
from server.descriptors import descriptor_limit
from server.store import describe_url


def print_banner(args, options, config, max_connections, processes=1):
    """What an operator reads first: the address, the pay API and its keys, the HTTP limits, metrics."""
    limits = options.limits
    print("Backend on http://%s:%d (notify URL %s, sign type %s, database %s%s)" % (
        "[%s]" % args.host if ":" in args.host else args.host, args.port,
        config.notify_url, config.sign_type, describe_url(config.database_url),
        ", %d processes" % processes if processes > 1 else ""), flush=True)
    if config.pay_version == server_config.V3:
        print("WeChat Pay API v3: merchant %s, certificate serial %s; WeChat's signatures verified with %s"
              % (config.mch_id, config.mch_serial_no, " and ".join(filter(None, [
                  config.pay_public_key_id and "the WeChat Pay public key %s" % config.pay_public_key_id,
                  config.platform_cert_dir and "platform certificates kept in %s" % config.platform_cert_dir]))),
              flush=True)
    print("HTTP limits%s: first request head within %gs, body within %gs, idle keep-alive %gs, answers "
          "taken within %gs, at most %d connections (descriptor limit %s)" % (
              " per process" if processes > 1 else "",
              limits.header_timeout, limits.body_timeout, limits.idle_timeout, limits.send_timeout,
              max_connections, descriptor_limit() or "none"), flush=True)
    if options.metrics_listen:
        print("Metrics on http://%s/metrics (no token: keep that address private)" % options.metrics_listen,
              flush=True)

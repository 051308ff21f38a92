"""The retry policy both pay clients share: an answer that asks for a retry (SYSTEMERROR, errcode -1)."""
import asyncio
import logging

from server.wechat import UpstreamError

log = logging.getLogger("server.wechat")


class Retry:
    """What one call returns instead of an answer when WeChat asks to be asked again; `error`
    is what it said."""

    def __init__(self, error):
        self.error = error


async def with_retries(once, name, attempts, backoff):
    """Call once() up to `attempts` times while it returns a Retry, waiting backoff, 2 x
    backoff, ... between calls; UpstreamError when every attempt asked for a retry."""
    for attempt in range(1, attempts + 1):
        result = await once()
        if not isinstance(result, Retry):
            return result
        log.warning("%s: WeChat asked for a retry (%s), attempt %d/%d",
                    name, result.error.wechat_code, attempt, attempts)
        if attempt < attempts:
            await asyncio.sleep(backoff * 2 ** (attempt - 1))
    raise UpstreamError("%s still failing after %d attempts (%s)" % (name, attempts, result.error.wechat_code))

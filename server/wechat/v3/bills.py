"""v3 bills: GET /v3/bill/tradebill (a signed answer naming the file and its SHA1), then the file at its download_url."""
import re
from urllib.parse import urlsplit

from server import metrics
from server.wechat import UpstreamError, WeChatRefused, bill
from server.wechat.v3 import wire

NO_BILL = {"NO_STATEMENT_EXIST": True, "STATEMENT_CREATING": False}   # code -> whether it may mean a day without trades
_SHA1 = re.compile(r"[0-9a-fA-F]{40}")


async def download_bill(client, day):
    """The day's trade bill (ALL) as [BillRow]: tradebill through the client's signed and
    verified call, then GET download_url (signed request, unsigned answer, gzip), the SHA1 of
    the uncompressed file checked in constant time. NO_STATEMENT_EXIST and STATEMENT_CREATING
    are BillNotReady."""
    try:
        answer = await client._call("GET", "/v3/bill/tradebill?bill_date=%s&bill_type=ALL&tar_type=GZIP"
                                    % day.isoformat(), "tradebill")
    except WeChatRefused as exc:
        if exc.wechat_code in NO_BILL:
            raise bill.BillNotReady(exc.wechat_code, str(exc), NO_BILL[exc.wechat_code]) from None
        raise
    url, digest = bill_file(answer, client.base_url)
    limit = client.config.bill_max_bytes
    return await bill.read(await bill.bounded(_download(client, url), limit), limit, gzipped=True, sha1=digest)


def bill_file(answer, base_url):
    """(download_url, hash_value in lower case) of tradebill's answer. The file must be on the
    pay host itself: our signed request goes nowhere else."""
    url, digest = answer.get("download_url"), answer.get("hash_value")
    if answer.get("hash_type") != "SHA1" or not isinstance(digest, str) or not _SHA1.fullmatch(digest):
        raise UpstreamError("tradebill answered no SHA1 hash_value")
    if not isinstance(url, str) or _origin(url) != _origin(base_url):
        raise UpstreamError("tradebill's download_url is not on %s" % base_url)
    return url, digest.lower()


async def _download(client, url):
    parts = urlsplit(url)
    target = parts.path + ("?" + parts.query if parts.query else "")
    headers = dict(client._headers, Authorization=wire.authorization(
        client.config.mch_id, client.config.mch_serial_no, client.private_key, "GET", target, b"",
        int(client.clock())))
    async with metrics.WeChatCall("billdownload"):   # download_url's path is WeChat's: not a label
        status, _, body = await client._send("GET", url, b"", headers, "billdownload", client.config.bill_max_bytes)
        if status != 200:
            raise UpstreamError("billdownload answered HTTP %d" % status)
    return body


def _origin(url):
    try:
        parts = urlsplit(url)
        return parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None

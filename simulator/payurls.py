"""The links WeChat answers for orders paid outside a Mini Program: Native's code_url (the QR
code's text) and H5's mweb_url (the page that opens WeChat), both made from the prepay_id, so
they live and are renewed with it, and found again from it when the phone uses them."""
import hashlib
import string
import urllib.parse

# WeChat's code_url: weixin://wxpay/bizpayurl?pr=<7 characters>, e.g. pr=NwY5Mz9 (Native 下单
# and Native调起支付 docs); "code_url有效期为2小时，过期后扫码不能再发起支付": it lives as long as
# the prepay_id it was answered with.
CODE_URL_PREFIX = "weixin://wxpay/bizpayurl?pr="
PR_LENGTH = 7
# WeChat's mweb_url: https://wx.tenpay.com/cgi-bin/mmpayweb-bin/checkmweb?prepay_id=<prepay_id>
# &package=<9-10 digits> (统一下单 trade_type=MWEB answers, e.g. package=638899314,
# package=1037687096); here on the simulator's own address, so the phone can open it.
MWEB_PATH = "/cgi-bin/mmpayweb-bin/checkmweb"
_ALPHABET = string.digits + string.ascii_letters


def _digest(prepay_id, purpose):
    return int.from_bytes(hashlib.sha256(("%s\0%s" % (purpose, prepay_id)).encode()).digest(),
                          "big")


def code_url(prepay_id):
    """The code_url of a prepay_id: pr is 7 base-62 characters derived from it."""
    n, pr = _digest(prepay_id, "pr"), ""
    for _ in range(PR_LENGTH):
        n, digit = divmod(n, len(_ALPHABET))
        pr += _ALPHABET[digit]
    return CODE_URL_PREFIX + pr


def mweb_package(prepay_id):
    """The package of an mweb_url: 9 or 10 digits, no leading zero."""
    return str(100000000 + _digest(prepay_id, "package") % 1900000000)


def mweb_url(base, prepay_id):
    """base: the simulator's scheme://host as the merchant reached it."""
    query = urllib.parse.urlencode({"prepay_id": prepay_id, "package": mweb_package(prepay_id)})
    return "%s%s?%s" % (base, MWEB_PATH, query)


def prepay_of_code_url(prepay_ids, url):
    """The prepay_id among prepay_ids whose code_url is url, or None.

    A scan is rare and the prepay_ids are the simulator's own (reset() forgets them), so a
    look through them is simpler than keeping a second index in step.
    """
    if not isinstance(url, str) or not url.startswith(CODE_URL_PREFIX):
        return None
    return next((p for p in prepay_ids if code_url(p) == url), None)


def prepay_of_mweb_url(url):
    """(prepay_id, package) named by an mweb_url on any host, or None when it is not one."""
    if not isinstance(url, str):
        return None
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qs(parts.query)
    if parts.path != MWEB_PATH or len(query.get("prepay_id", ())) != 1 \
            or len(query.get("package", ())) != 1:
        return None
    return query["prepay_id"][0], query["package"][0]

"""The links WeChat answers for orders paid outside a Mini Program: Native's code_url (the QR
code's text, living as long as its prepay_id) and H5's mweb_url (the page that opens WeChat,
living 5 minutes), both made from the prepay_id and found again from it when the phone uses
them; and the H5 link's life, shared by v2's mweb_url and v3's h5_url."""
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
# H5's link, v2's mweb_url and v3's h5_url: "mweb_url的有效期为5分钟" (统一下单, H5.php?chapter=
# 9_20) and "h5_url的有效期为5分钟" (H5下单); opened later, WeChat's checkmweb page shows
# "支付请求已失效，请重新发起支付" (H5支付's common errors). v2's prepay_id lives on (2 hours), so
# a repeated unifiedorder answers the same prepay_id with a new link (a new package).
H5_LINK_TTL = 300
H5_LINK_EXPIRED = "支付请求已失效，请重新发起支付"
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


def mweb_package(prepay_id, link=0):
    """The package of the link-th mweb_url of a prepay_id: 9 or 10 digits, no leading zero."""
    purpose = "package" if link == 0 else "package\0%d" % link
    return str(100000000 + _digest(prepay_id, purpose) % 1900000000)


def mweb_url(base, prepay_id, link=0):
    """base: the simulator's scheme://host as the merchant reached it."""
    query = urllib.parse.urlencode({"prepay_id": prepay_id,
                                    "package": mweb_package(prepay_id, link)})
    return "%s%s?%s" % (base, MWEB_PATH, query)


def h5_link_expired(field, out_trade_no):
    """The phone's answer to an H5 link opened after its 5 minutes (mweb_url or h5_url)."""
    return ("%s (%s expired: it lives %g minutes; the order call again with out_trade_no %s "
            "answers a new one)" % (H5_LINK_EXPIRED, field, H5_LINK_TTL / 60, out_trade_no))


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
    parts = split_url(url)
    if parts is None:
        return None
    query = urllib.parse.parse_qs(parts.query)
    if parts.path != MWEB_PATH or len(query.get("prepay_id", ())) != 1 \
            or len(query.get("package", ())) != 1:
        return None
    return query["prepay_id"][0], query["package"][0]


def split_url(url):
    """urlsplit's parts of url, or None when url is no string or no URL (urlsplit raises
    ValueError for one such as http://[::1/, an unclosed IPv6 host)."""
    if not isinstance(url, str):
        return None
    try:
        return urllib.parse.urlsplit(url)
    except ValueError:
        return None

"""The simulator's own signing and XML code: vectors, hardening, explanations."""
import json

import pytest

from simulator.v2 import wire as protocol
from tests.support import VECTORS_FILE     # the repo's copy of the spec's vectors.json


def load_vectors():
    with open(VECTORS_FILE, encoding="utf-8") as f:
        return json.load(f)["sign"]


@pytest.mark.parametrize("vector", load_vectors(), ids=lambda v: v["id"])
def test_sign_vectors(vector):
    got = protocol.sign(vector["params"], vector["key"], vector["sign_type"])
    assert got == vector["expected"]
    signed = dict(vector["params"], sign=vector["expected"])
    assert protocol.verify(signed, vector["key"], vector["sign_type"])


def test_string_to_sign_matches_official_example():
    v1 = load_vectors()[0]
    assert protocol.string_to_sign(v1["params"], v1["key"]) == v1["string_to_sign"]


def test_all_vector_ids_present():
    # V7/V7H cover empty values, `sign` ignored, uppercase first, raw non-ASCII values.
    assert {v["id"] for v in load_vectors()} >= {"V1", "V2", "V3", "V4", "V5", "V6", "V7", "V7H"}


def test_verify_rejects_tampering_and_other_type():
    params = {"appid": "wx1", "total_fee": "1"}
    params["sign"] = protocol.sign(params, "k" * 32)
    assert protocol.verify(params, "k" * 32)
    assert not protocol.verify(dict(params, total_fee="2"), "k" * 32)
    assert not protocol.verify(params, "k" * 32, protocol.HMAC_SHA256)
    assert not protocol.verify(dict(params, sign=params["sign"].lower()), "k" * 32)
    assert not protocol.verify({"appid": "wx1"}, "k" * 32)


def test_byte_order_sort_is_case_sensitive():
    text = protocol.string_to_sign({"b": "1", "Z": "2", "a": "3", "appId": "4"}, "K")
    assert text == "Z=2&a=3&appId=4&b=1&key=K"


def test_parse_cdata_text_and_numbers_mixed():
    body = ("<xml>\n  <appid><![CDATA[wx1]]></appid>\n  <total_fee>100</total_fee>\n"
            "  <body>a &amp; b</body><attach><![CDATA[<x>]]></attach><empty></empty></xml>")
    assert protocol.parse_xml(body.encode()) == {
        "appid": "wx1", "total_fee": "100", "body": "a & b", "attach": "<x>", "empty": ""}


def test_parse_keeps_unknown_fields_and_ignores_declared_encoding():
    body = '<?xml version="1.0" encoding="GBK"?><xml><foo_bar>中</foo_bar></xml>'.encode("utf-8")
    assert protocol.parse_xml(body) == {"foo_bar": "中"}


@pytest.mark.parametrize("body, reason", [
    (b"", "empty"),
    (b"<root><a>1</a></root>", "root element"),
    (b"<xml><a><b>1</b></a></xml>", "not a flat"),
    (b"<xml><a>1</a><a>2</a></xml>", "twice"),
    (b"<xml><a>1</a>", "well-formed"),
    (b"<xml>text<a>1</a></xml>", "inside <xml>"),
    (b'<?xml version="1.0"?><!DOCTYPE xml><xml><a>1</a></xml>', "DOCTYPE"),
])
def test_parse_refuses_non_wechat_xml(body, reason):
    with pytest.raises(protocol.XMLError, match=reason):
        protocol.parse_xml(body)


def test_parse_refuses_xxe_without_reading_the_file(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    body = ('<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY x SYSTEM "file://%s">]>'
            "<xml><appid>&x;</appid></xml>" % secret).encode()
    with pytest.raises(protocol.XMLError) as err:
        protocol.parse_xml(body)
    assert "TOP-SECRET" not in str(err.value)


def test_lxml_parser_itself_does_not_expand_entities():
    # Belt and braces: even without the DOCTYPE pre-check the parser would not expand.
    from lxml import etree
    body = b'<!DOCTYPE xml [<!ENTITY a "EXPANDED">]><xml><b>&a;</b></xml>'
    root = etree.fromstring(body, protocol._parser())
    assert "EXPANDED" not in etree.tostring(root).decode()


def test_parse_refuses_billion_laughs_quickly():
    lol = ['<!ENTITY l0 "lol">'] + ['<!ENTITY l%d "%s">' % (i, "&l%d;" % (i - 1) * 10)
                                    for i in range(1, 10)]
    body = ('<?xml version="1.0"?><!DOCTYPE xml [%s]><xml><a>&l9;</a></xml>'
            % "".join(lol)).encode()
    with pytest.raises(protocol.XMLError, match="DOCTYPE"):
        protocol.parse_xml(body)


@pytest.mark.parametrize("body", [
    "<xml><body>中文</body></xml>".encode("gbk"),
    "<xml><body>中文</body></xml>".encode("utf-16"),
    "<xml><body>😀</body></xml>".encode("utf-8"),
])
def test_parse_refuses_non_utf8(body):
    with pytest.raises(protocol.XMLError) as err:
        protocol.parse_xml(body)
    assert err.value.not_utf8


def test_to_xml_round_trip_with_cdata_and_special_characters():
    fields = {"return_code": "SUCCESS", "total_fee": "100", "detail": '{"a":"<b>&"}',
              "odd": "x]]>y", "body": "腾讯充值中心"}
    xml = protocol.to_xml(fields)
    assert b"<total_fee>100</total_fee>" in xml
    assert b"<![CDATA[SUCCESS]]>" in xml
    assert protocol.parse_xml(xml) == fields


def test_nonce_shape():
    values = {protocol.nonce() for _ in range(50)}
    assert len(values) == 50
    assert all(len(v) == 32 and v.isalnum() for v in values)


KEY = "192006250b4c09247ec02edce69f6a2d"


def explain(params, sign_type="MD5", alternatives=()):
    return protocol.explain_signature_failure(params, KEY, sign_type, alternatives)


def test_explanation_masks_key_and_shows_string():
    params = {"appid": "wx1", "mch_id": "1", "sign": "0" * 32}
    out = explain(params)
    assert out["string_to_sign"] == "appid=wx1&mch_id=1&key=" + "*" * 32
    assert KEY not in json.dumps(out)
    assert out["hints"] == [protocol.NO_MATCH_HINT]


def test_explanation_empty_value_signed():
    params = {"appid": "wx1", "attach": "", "mch_id": "1"}
    wrong = protocol._digest("appid=wx1&attach=&mch_id=1&key=" + KEY, KEY, "MD5")
    hints = explain(dict(params, sign=wrong))["hints"]
    assert any("empty values are not signed (attach)" in h for h in hints)
    assert any("empty values are signed too" in h for h in hints)


def test_explanation_md5_where_hmac_declared_and_vice_versa():
    params = {"appid": "wx1", "sign_type": "HMAC-SHA256"}
    md5 = protocol.sign(params, KEY, "MD5")
    hints = explain(dict(params, sign=md5), "HMAC-SHA256")["hints"]
    assert any("32 characters (an MD5 sign)" in h for h in hints)
    assert any("signed with MD5 instead of HMAC-SHA256" in h for h in hints)
    hmac_sign = protocol.sign({"appid": "wx1"}, KEY, "HMAC-SHA256")
    hints = explain({"appid": "wx1", "sign": hmac_sign})["hints"]
    assert any("64 characters (HMAC-SHA256) but sign_type is absent" in h for h in hints)


def test_explanation_detects_appsecret_and_missing_sign_type():
    secret = "8a2f3c4d5e6f70819a0b1c2d3e4f5061"
    params = {"appid": "wx1", "mch_id": "1"}
    wrong = protocol.sign(params, secret)
    hints = explain(dict(params, sign=wrong), alternatives=[("the AppSecret", secret)])["hints"]
    assert hints == ["the sign matches when signed (MD5) with the AppSecret"]
    params = {"appid": "wx1", "sign_type": "HMAC-SHA256"}
    wrong = protocol.sign({"appid": "wx1"}, KEY, "HMAC-SHA256")
    hints = explain(dict(params, sign=wrong), "HMAC-SHA256")["hints"]
    assert "the sign matches when sign_type is left out of the signed fields" in hints


def test_explanation_lowercase_and_odd_length():
    params = {"appid": "wx1"}
    good = protocol.sign(params, KEY)
    hints = explain(dict(params, sign=good.lower()))["hints"]
    assert "the sign must be uppercase hex" in hints
    hints = explain(dict(params, sign="ABC"))["hints"]
    assert any("has 3 characters" in h for h in hints)

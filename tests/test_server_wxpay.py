"""Unit tests for server/wechat/v2/wire.py: the spec's vectors, XML hardening, paySign."""
import pytest

from server.wechat.v2 import wire as wxpay
from tests.support import load_vectors

SIGN_VECTORS = load_vectors()["sign"]


@pytest.mark.parametrize("vector", SIGN_VECTORS, ids=[v["id"] for v in SIGN_VECTORS])
def test_sign_vectors(vector):
    assert wxpay.sign(vector["params"], vector["key"], vector["sign_type"]) == vector["expected"]
    signed = dict(vector["params"], sign=vector["expected"])
    assert wxpay.verify(signed, vector["key"], vector["sign_type"])


@pytest.mark.parametrize("vector", SIGN_VECTORS, ids=[v["id"] for v in SIGN_VECTORS])
def test_verify_refuses_tampering(vector):
    signed = dict(vector["params"], sign=vector["expected"])
    assert not wxpay.verify(dict(signed, extra="1"), vector["key"], vector["sign_type"])
    assert not wxpay.verify(signed, vector["key"][:-1] + "x", vector["sign_type"])
    other = wxpay.HMAC_SHA256 if vector["sign_type"] == wxpay.MD5 else wxpay.MD5
    assert not wxpay.verify(signed, vector["key"], other)


def test_string_to_sign_matches_v1():
    v1 = SIGN_VECTORS[0]
    assert wxpay.string_to_sign(v1["params"]) + "&key=" + v1["key"] == v1["string_to_sign"]


def test_verify_needs_a_sign():
    assert not wxpay.verify({"a": "b"}, "k" * 32)
    assert not wxpay.verify({"a": "b", "sign": ""}, "k" * 32)


def test_pay_sign_params_v5():
    v5 = next(v for v in SIGN_VECTORS if v["id"] == "V5")
    p = v5["params"]
    out = wxpay.pay_sign_params(p["appId"], p["package"].split("=", 1)[1], v5["key"], "MD5",
                                p["timeStamp"], p["nonceStr"])
    assert out == {"timeStamp": p["timeStamp"], "nonceStr": p["nonceStr"], "package": p["package"],
                   "signType": "MD5", "paySign": v5["expected"]}


def test_xml_round_trip_keeps_everything():
    params = {"appid": "wx1", "body": "腾讯<b>&\"'", "Zeta": "z", "empty": ""}
    assert wxpay.from_xml(wxpay.to_xml(params)) == params


def test_xml_cdata_and_plain_text_mixed():
    body = b"<xml>\n  <a><![CDATA[x<y]]></a>\n  <b>12</b> <c></c></xml>"
    assert wxpay.from_xml(body) == {"a": "x<y", "b": "12", "c": ""}


@pytest.mark.parametrize("body", [
    b'<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY x SYSTEM "file:///etc/passwd">]><xml><a>&x;</a></xml>',
    b'<!DOCTYPE xml [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
    b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]><xml><a>&c;</a></xml>',
    b'<!doctype xml><xml><a>1</a></xml>',
    b"<xml><a><b>nested</b></a></xml>",
    b"<notxml><a>1</a></notxml>",
    b"<xml><a>1</a>",
    b"",
    "<xml><a>中</a></xml>".encode("gbk"),
    b"<xml>" + b"<a>1</a>" * 10000 + b"</xml>",
])
def test_hostile_or_malformed_xml_refused(body):
    with pytest.raises(wxpay.XMLError):
        wxpay.from_xml(body)


def test_entity_content_never_read(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET")
    body = ('<!DOCTYPE xml [<!ENTITY x SYSTEM "file://%s">]><xml><a>&x;</a></xml>' % secret).encode()
    with pytest.raises(wxpay.XMLError) as info:
        wxpay.from_xml(body)
    assert "TOPSECRET" not in str(info.value)


def test_nonce_shape():
    nonces = {wxpay.nonce() for _ in range(100)}
    assert len(nonces) == 100
    assert all(len(n) == 32 and n.isalnum() for n in nonces)


def test_refund_vector_r1_decrypts():
    for vector in load_vectors()["refund_notify"]:
        assert wxpay.decrypt_req_info(vector["req_info"], vector["api_key"]) == vector["expected"]


@pytest.mark.parametrize("req_info", ["", "not base64!", "QUJD", "A" * 44])
def test_refund_garbage_refused(req_info):
    with pytest.raises(wxpay.XMLError):
        wxpay.decrypt_req_info(req_info, "OF4Ne3znh8KqL0V4NqmALQa0uXMYKcEk")


def test_refund_wrong_key_refused():
    vector = load_vectors()["refund_notify"][0]
    with pytest.raises(wxpay.XMLError):
        wxpay.decrypt_req_info(vector["req_info"], "0" * 32)

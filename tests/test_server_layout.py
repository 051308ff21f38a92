"""The server core's layering: the service speaks no wire format; both pay clients are a PayClient."""
import ast
import inspect
import os

from server.wechat import PayClient
from server.wechat.v2.client import WeChatClient
from server.wechat.v3.client import WeChatClientV3

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WIRE = {"server.wechat.v2.wire", "server.wechat.v3.wire", "server.wechat.v2", "server.wechat.v3", "lxml",
        "cryptography", "json", "xml"}


def modules_imported(folder):
    found = set()
    for dirpath, _, files in os.walk(os.path.join(ROOT, folder)):
        for name in (n for n in files if n.endswith(".py")):
            with open(os.path.join(dirpath, name), encoding="utf-8") as f:
                tree = ast.parse(f.read())
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    found.update(a.name for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    found.add(node.module)
                    found.update("%s.%s" % (node.module, a.name) for a in node.names)
    return found


def test_the_service_imports_no_wire_format():
    assert modules_imported(os.path.join("server", "service")) & WIRE == set()


def test_both_clients_implement_every_member_of_the_pay_client_protocol():
    members = [n for n in dir(PayClient) if not n.startswith("_")] + list(PayClient.__annotations__)
    assert "attempts" in members and "open_notification" in members
    for cls in (WeChatClient, WeChatClientV3):
        for name in members:
            ours = getattr(PayClient, name, None)
            theirs = getattr(cls, name, None)
            if name in PayClient.__annotations__:
                continue   # an attribute: set on every instance (checked in the clients' own tests)
            assert theirs is not None and theirs is not ours, (cls.__name__, name)
            assert list(inspect.signature(theirs).parameters)[:len(inspect.signature(ours).parameters)] == \
                list(inspect.signature(ours).parameters), (cls.__name__, name)

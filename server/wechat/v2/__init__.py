"""WeChat Pay API v2: the client (client.py) and its XML wire format (wire.py)."""

"""The backend over HTTP: the guarded server (server.py, connections.py) and the handlers."""

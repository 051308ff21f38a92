"""Offline WeChat simulator: login, Pay v2, notifications, control plane."""

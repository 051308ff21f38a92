"""WeChat Mini Program payment backend (Tornado)."""

"""A faketime for test processes: time.time moved by WXPAY_TEST_CLOCK_SHIFT seconds (on PYTHONPATH)."""
import os
import time

_SHIFT = float(os.environ.get("WXPAY_TEST_CLOCK_SHIFT") or 0)
if _SHIFT:
    _real = time.time
    # the backend's clock is time.time (its default argument, bound at import: after this runs)
    time.time = lambda: _real() + _SHIFT

"""Refund outcomes over time: an accepted refund stays PROCESSING until its due time, when a
timer on the IOLoop settles it (SUCCESS, or the outcome the control plane chose) and starts its
notification. The control plane may settle one now; moving the clock settles what became due.
Nobody else settles: reads only read."""
from tornado.ioloop import IOLoop


class Settlement:
    """One IOLoop timer per PROCESSING refund; State makes the change, the notifier tells."""

    def __init__(self, state, notifier):
        self.state, self.notifier = state, notifier
        self._timers = {}       # refund key -> (IOLoop, handle)

    def schedule(self, refund):
        """A freshly accepted refund settles to refund.outcome once refund.due_at passes."""
        self._cancel(refund.key)
        loop = IOLoop.current()
        delay = max(0.0, refund.due_at - self.state.clock.now())
        self._timers[refund.key] = (loop, loop.call_later(delay, self._due, refund))

    def _due(self, refund):
        self._timers.pop(refund.key, None)
        if refund.refund_status == "PROCESSING" and self.state.holds(refund):
            self.settle(refund, refund.outcome)

    def settle(self, refund, status):
        """Settle one PROCESSING refund now and start its notification."""
        self._cancel(refund.key)
        self.state.settle_refund(refund, status)
        self.notifier.start_refund(refund)

    def clock_moved(self):
        """After POST /sim/clock: settle what became due, and time the rest anew."""
        for refund in self.state.due_refunds():
            self.settle(refund, refund.outcome)
        for refund in self.state.pending_refunds():
            self.schedule(refund)

    def _cancel(self, key):
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer[0].remove_timeout(timer[1])

    def cancel_all(self):
        """Forget every timer (/sim/reset, shutdown)."""
        for key in list(self._timers):
            self._cancel(key)

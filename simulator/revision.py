"""The state's revision: a number counting its changes, and the decorator that marks a State method as one."""
import functools

# What a change may touch (the console's push channel names these; docs/simulator.md).
WHAT = ("orders", "requests", "notifications", "refunds", "bills", "clock", "faults", "config")


def changes(*what):
    """A State method that changes `what`: once it returns, the state's revision counts it
    (a method that raises changed nothing: its checks come before its changes)."""
    def decorate(method):
        @functools.wraps(method)
        def changing(self, *args, **kwargs):
            result = method(self, *args, **kwargs)
            self.changed(*what)
            return result
        return changing
    return decorate

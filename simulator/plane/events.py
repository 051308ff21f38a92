"""The console's push channel: GET /sim/console/events, Server-Sent Events of the state's changes.

On connect: `retry: 2000` and `event: hello` {"revision"}; then `event: change` {"revision",
"what"} after changes, coalesced (at most one per COALESCE seconds a stream), and `: ping`
every PING seconds. At most MAX_STREAMS streams are open (429 beyond); a stream ends when its
client goes or the simulator shuts down (503 after). The page fetches what it shows itself.
"""
import asyncio
import datetime
import json

from tornado.ioloop import IOLoop
from tornado.iostream import StreamClosedError

from simulator import bills
from simulator.models import BEIJING
from simulator.plane.control import SimError, SimHandler, check_same_origin

MAX_STREAMS = 32
PING = 15.0             # seconds between comments that keep proxies from closing a stream
COALESCE = 0.1          # seconds a stream waits after a change event: ~10 a second at most
RETRY_MS = 2000         # how soon an EventSource reconnects


class Stream:
    """One client's stream: the changes (what) not yet sent, and whether it has ended."""

    def __init__(self):
        self.what = set()
        self.revision = 0
        self.ended = False
        self._ready = asyncio.Event()
        self._end = asyncio.Event()

    def heard(self, revision, what):
        self.revision = revision
        self.what.update(what)
        self._ready.set()

    async def next_change(self, timeout):
        """The changes since the last call as {"revision", "what"}; None when none came within
        timeout seconds (time to ping) or the stream ended."""
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except asyncio.TimeoutError:
            return None
        self._ready.clear()
        if self.ended or not self.what:
            return None
        change = {"revision": self.revision, "what": sorted(self.what)}
        self.what = set()
        return change

    async def pause(self, seconds):
        """Wait seconds before the next change event, unless the stream ends first."""
        try:
            await asyncio.wait_for(self._end.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    def end(self):
        self.ended = True
        self._ready.set()
        self._end.set()


class Events:
    """The open streams of one simulator; it hears every change of its state, and tells the
    streams when a Beijing day ends on the simulator's clock (that day's bills exist then)."""

    def __init__(self, state, limit=MAX_STREAMS):
        self.state, self.limit = state, limit
        self.streams = set()
        self.closed = False
        self._day_end = None        # (IOLoop, handle) of the timer at the next midnight
        state.listeners.append(self.heard)

    def heard(self, revision, what):
        for stream in self.streams:
            stream.heard(revision, what)
        if "clock" in what or "bills" in what:
            self._time_day_end()

    def open(self):
        """A new Stream; SimError 429 past the limit, 503 after shutdown."""
        if self.closed:
            raise SimError(503, "SHUTTING_DOWN", "the simulator is stopping")
        if len(self.streams) >= self.limit:
            raise SimError(429, "TOO_MANY_STREAMS", "%d event streams are open already (close "
                           "a console tab; the page falls back to polling)" % self.limit)
        stream = Stream()
        self.streams.add(stream)
        if self._day_end is None:
            self._time_day_end()
        return stream

    def close(self, stream):
        stream.end()
        self.streams.discard(stream)
        if not self.streams:
            self._cancel_day_end()

    def shutdown(self):
        """End every stream and refuse new ones: a stop must not wait on open streams."""
        self.closed = True
        for stream in list(self.streams):
            self.close(stream)
        if self.heard in self.state.listeners:
            self.state.listeners.remove(self.heard)

    def _time_day_end(self):
        """(Re)arm the timer at the next Beijing midnight on the clock, while streams are open."""
        self._cancel_day_end()
        if not self.streams:
            return
        now = self.state.clock.now()
        today = datetime.datetime.fromtimestamp(now, BEIJING).date()
        delay = bills.bounds(today)[1] - now + 0.001
        loop = IOLoop.current()
        self._day_end = (loop, loop.call_later(delay, self._day_ended))

    def _day_ended(self):
        self._day_end = None
        self.state.changed("bills")

    def _cancel_day_end(self):
        if self._day_end is not None:
            self._day_end[0].remove_timeout(self._day_end[1])
            self._day_end = None


def frame(event, data):
    return "event: %s\ndata: %s\n\n" % (event, json.dumps(data, separators=(",", ":")))


class EventsHandler(SimHandler):
    """GET /sim/console/events: the stream (text/event-stream) until the client goes."""

    stream = None

    async def get(self):
        events = self.application.sim_events
        check_same_origin(self)     # another site's EventSource would hold a slot the console needs
        self.stream = events.open()
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Accel-Buffering", "no")      # a proxy must pass each event at once
        try:
            await self.send("retry: %d\n\n" % RETRY_MS
                            + frame("hello", {"revision": self.state.revision}))
            await self.serve(self.stream)
        except StreamClosedError:
            pass                                        # the client went
        finally:
            events.close(self.stream)
        if not self.request.connection.stream.closed():
            self.finish()

    async def serve(self, stream):
        while not stream.ended:
            change = await stream.next_change(PING)
            if stream.ended:
                return
            await self.send(frame("change", change) if change else ": ping\n\n")
            if change:
                await stream.pause(COALESCE)

    async def send(self, text):
        self.write(text)
        await self.flush()

    def on_connection_close(self):
        if self.stream is not None:
            self.stream.end()

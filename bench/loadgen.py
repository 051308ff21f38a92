#!/usr/bin/env python3
"""The bundled load generator: raw asyncio HTTP/1.1 keep-alive client, one process.

    python bench/loadgen.py SPEC.json            # prints one JSON result line on stdout

SPEC: {"port", "host"?, "concurrency", "mode": "closed" | "burst", "requests": [str, ...]
(raw requests, latin-1/utf-8 text), "count"? (closed: total requests, cycling through
`requests`; default len(requests)), "duration"? (closed: stop sending after this many
seconds), "timeout"? (seconds for one answer, default 30), "save_bodies"? (keep the answer
bodies, in request order)}.

closed: `concurrency` connections, each sends its next request as soon as the previous
answer arrived (wrk's model). burst: one connection per request, all connected first,
then every request written at once; `wall` is first send to last answer.

No requests/threads: asyncio Protocols, requests pre-encoded, a minimal response parser
(Content-Length or chunked), so the generator costs little CPU per request.
"""
import array
import asyncio
import json
import sys
import time


class Conn(asyncio.Protocol):
    """One keep-alive connection with at most one request outstanding."""

    def __init__(self, save):
        self.transport = None
        self.buf = bytearray()
        self.waiter = None
        self.save = save
        self.lost = None

    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        self.lost = exc or ConnectionError("connection closed by the server")
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(self.lost)

    def data_received(self, data):
        self.buf += data
        if self.waiter is not None and not self.waiter.done():
            self._parse()

    def send(self, data):
        if self.lost is not None:
            raise self.lost
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self.waiter

    def _parse(self):
        buf = self.buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(buf[:end]).lower()
        status = int(head[9:12])
        start = end + 4
        pos = head.find(b"\r\ncontent-length:")
        if pos >= 0:
            stop = head.find(b"\r\n", pos + 2)
            length = int(head[pos + 17:stop if stop >= 0 else len(head)])
            total = start + length
            if len(buf) < total:
                return
            body = bytes(buf[start:total]) if self.save else None
            del buf[:total]
        elif b"transfer-encoding: chunked" in head:
            parsed = _chunked(buf, start)
            if parsed is None:
                return
            body, total = parsed
            del buf[:total]
        else:
            self.waiter.set_exception(ValueError("answer without Content-Length"))
            return
        self.waiter.set_result((status, body))


def _chunked(buf, pos):
    body = bytearray()
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
        if size == 0:
            trailer_end = buf.find(b"\r\n\r\n", eol)
            if trailer_end == eol:          # no trailers: the empty line follows at once
                return bytes(body), eol + 4
            if trailer_end < 0:
                return None
            return bytes(body), trailer_end + 4
        if len(buf) < eol + 2 + size + 2:
            return None
        body += buf[eol + 2:eol + 2 + size]
        pos = eol + 2 + size + 2


class Result:
    def __init__(self, n_slots, save):
        self.status = {}
        self.errors = 0
        self.error_samples = []
        self.lat = array.array("d")
        self.bodies = [None] * n_slots if save else None

    def ok(self, index, status, body, latency):
        self.status[status] = self.status.get(status, 0) + 1
        self.lat.append(latency)
        if self.bodies is not None:
            self.bodies[index] = body.decode("utf-8", "replace") if body is not None else None

    def error(self, exc):
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append("%s: %s" % (type(exc).__name__, exc))


async def connect(loop, host, port, save):
    _, conn = await loop.create_connection(lambda: Conn(save), host, port)
    return conn


async def closed_loop(spec, reqs, result):
    loop = asyncio.get_running_loop()
    host, port, save = spec.get("host", "127.0.0.1"), spec["port"], spec.get("save_bodies", False)
    count = spec.get("count", len(reqs))
    timeout = spec.get("timeout", 30.0)
    deadline = time.perf_counter() + spec["duration"] if spec.get("duration") else None
    n = len(reqs)
    state = {"next": 0}
    perf = time.perf_counter

    async def worker():
        conn = await connect(loop, host, port, save)
        try:
            while True:
                i = state["next"]
                if i >= count or (deadline is not None and perf() >= deadline):
                    return
                state["next"] = i + 1
                if conn.lost is not None:
                    conn = await connect(loop, host, port, save)
                t0 = perf()
                try:
                    status, body = await asyncio.wait_for(conn.send(reqs[i % n]), timeout)
                except (OSError, ValueError, asyncio.TimeoutError) as exc:
                    result.error(exc)
                    conn.transport.close()
                    conn.lost = conn.lost or exc
                    continue
                result.ok(i, status, body, perf() - t0)
        finally:
            conn.transport.close()

    t0 = perf()
    await asyncio.gather(*(worker() for _ in range(min(spec["concurrency"], count))))
    return perf() - t0, state["next"]


async def burst(spec, reqs, result):
    """All requests in flight at once, each on its own (pre-opened) connection."""
    loop = asyncio.get_running_loop()
    host, port, save = spec.get("host", "127.0.0.1"), spec["port"], spec.get("save_bodies", False)
    count = spec.get("count", len(reqs))
    gate = asyncio.Semaphore(64)      # do not overflow the server's listen backlog

    async def opened():
        async with gate:
            return await connect(loop, host, port, save)
    conns = await asyncio.gather(*(opened() for _ in range(count)))
    await asyncio.sleep(0.3)          # let the server accept every connection
    perf = time.perf_counter
    timeout = spec.get("timeout", 30.0)

    async def one(i, fut, t0):
        try:
            status, body = await asyncio.wait_for(fut, timeout)
        except (OSError, ValueError, asyncio.TimeoutError) as exc:
            result.error(exc)
            return
        result.ok(i, status, body, perf() - t0)

    t0 = perf()
    futures = [conn.send(reqs[i % len(reqs)]) for i, conn in enumerate(conns)]
    await asyncio.gather(*(one(i, fut, t0) for i, fut in enumerate(futures)))
    wall = perf() - t0
    for conn in conns:
        conn.transport.close()
    return wall, count


def percentiles(values):
    if not values:
        return {}
    s = sorted(values)

    def pick(q):
        return round(1000.0 * s[min(len(s) - 1, int(q * len(s)))], 3)
    return {"p50": pick(0.50), "p90": pick(0.90), "p99": pick(0.99), "max": round(1000.0 * s[-1], 3)}


async def main_async(spec):
    reqs = [r.encode("latin-1") if isinstance(r, str) else r for r in spec["requests"]]
    if not reqs:
        raise SystemExit("loadgen: no requests")
    count = spec.get("count", len(reqs))
    result = Result(count, spec.get("save_bodies", False))
    started = time.time()
    if spec.get("mode", "closed") == "burst":
        wall, sent = await burst(spec, reqs, result)
    else:
        wall, sent = await closed_loop(spec, reqs, result)
    ok = sum(n for status, n in result.status.items() if 200 <= status < 300)
    out = {"generator": "asyncio", "sent": sent, "completed": len(result.lat), "ok": ok,
           "status": {str(k): v for k, v in sorted(result.status.items())},
           "errors": result.errors, "error_samples": result.error_samples,
           "wall": wall, "rps": (len(result.lat) / wall) if wall > 0 else 0.0,
           "latency_ms": percentiles(result.lat), "started": started,
           "concurrency": spec["concurrency"] if spec.get("mode", "closed") == "closed" else count}
    if result.bodies is not None:
        out["bodies"] = result.bodies
    return out


def main(argv):
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as f:
        spec = json.load(f)
    out = asyncio.run(main_async(spec))
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

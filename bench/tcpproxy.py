#!/usr/bin/env python3
"""A counting TCP proxy between the backend and the simulator (asyncio, own process).

    python bench/tcpproxy.py --listen 9100 --target 9000 --control 9101

Every byte is passed through unchanged. It counts accepted connections and HTTP requests
(request lines seen in the client-to-upstream stream). Connecting to the control port
answers one JSON line {"accepted", "requests", "open", "closed_by_client",
"closed_by_upstream"} and closes (who closed first: the backend's side or the simulator's).
"""
import argparse
import asyncio
import json
import signal

STATS = {"accepted": 0, "requests": 0, "open": 0, "closed_by_client": 0, "closed_by_upstream": 0}
MARK = b" HTTP/1.1\r\n"


class Upstream(asyncio.Protocol):
    def __init__(self, client):
        self.client = client
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.client.transport.write(data)

    def connection_lost(self, exc):
        if not self.client.closed:
            self.client.closed = True
            STATS["closed_by_upstream"] += 1
        self.client.transport.close()


class Client(asyncio.Protocol):
    def __init__(self, target):
        self.target = target
        self.transport = None
        self.upstream = None
        self.pending = []
        self.tail = b""
        self.closed = False

    def connection_made(self, transport):
        STATS["accepted"] += 1
        STATS["open"] += 1
        self.transport = transport
        asyncio.ensure_future(self.open_upstream())

    async def open_upstream(self):
        loop = asyncio.get_running_loop()
        try:
            _, self.upstream = await loop.create_connection(
                lambda: Upstream(self), "127.0.0.1", self.target)
        except OSError:
            self.transport.close()
            return
        if self.transport.is_closing():
            self.upstream.transport.close()
            return
        for data in self.pending:
            self.upstream.transport.write(data)
        self.pending = None

    def data_received(self, data):
        scan = self.tail + data
        STATS["requests"] += scan.count(MARK)
        self.tail = scan[-(len(MARK) - 1):]
        if self.pending is not None:
            self.pending.append(data)
        else:
            self.upstream.transport.write(data)

    def connection_lost(self, exc):
        STATS["open"] -= 1
        if not self.closed:
            self.closed = True
            STATS["closed_by_client"] += 1
        if self.upstream is not None:
            self.upstream.transport.close()


async def control(reader, writer):
    writer.write((json.dumps(STATS) + "\n").encode())
    await writer.drain()
    writer.close()


async def serve(args):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Client(args.target), "127.0.0.1", args.listen,
                                      backlog=1024)
    ctl = await asyncio.start_server(control, "127.0.0.1", args.control)
    print("counting proxy 127.0.0.1:%d -> 127.0.0.1:%d (control %d)"
          % (args.listen, args.target, args.control), flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    ctl.close()


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--listen", type=int, required=True)
    p.add_argument("--target", type=int, required=True)
    p.add_argument("--control", type=int, required=True)
    asyncio.run(serve(p.parse_args()))


if __name__ == "__main__":
    main()

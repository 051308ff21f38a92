import socket, sys, time, requests
port = int(sys.argv[1]); n = int(sys.argv[2]); hold = float(sys.argv[3])
socks = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10000\r\n\r\n")
    socks.append(s)
end = time.time() + hold; ok = bad = 0; last = ""
while time.time() < end:
    for s in socks:
        try: s.send(b" ")
        except OSError: pass
    try:
        requests.get("http://127.0.0.1:%d/healthz" % port, timeout=2); ok += 1
    except Exception as e:
        bad += 1; last = repr(e)[:100]
    time.sleep(1)
print("normal client during body trickle: ok=%d failed=%d %s" % (ok, bad, last))

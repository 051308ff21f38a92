-- The bench's wrk script: raw requests from a file (one hex-encoded request per line).
-- Arguments (after --): <file> <mode> <nthreads>
--   rotate: each thread cycles through its share of the requests (duration-bounded run)
--   once:   each request is sent once; a thread stops when its share is used up, and the
--           few connections that still ask for a request get a cheap GET /bench-done (404),
--           reported as "overshoot"
-- done() prints one line: WRKJSON {...}
local threads = {}
local counter = 0

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

local items = {}
local n, idx = 0, 0
local mode = "rotate"
local finished = false
local done_req = "GET /bench-done HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"

local function unhex(s)
  return (s:gsub("..", function(h) return string.char(tonumber(h, 16)) end))
end

function init(args)
  local file, nthreads = args[1], tonumber(args[3])
  mode = args[2]
  local line_no = 0
  for line in io.lines(file) do
    if line ~= "" then
      if line_no % nthreads == tid then
        n = n + 1
        items[n] = unhex(line)
      end
      line_no = line_no + 1
    end
  end
  ok, other, overshoot = 0, 0, 0
end

function request()
  if finished then
    overshoot = overshoot + 1
    return done_req
  end
  idx = idx + 1
  if idx > n then
    if mode == "rotate" and n > 0 then
      idx = 1
    else
      finished = true
      wrk.thread:stop()
      overshoot = overshoot + 1
      return done_req
    end
  end
  return items[idx]
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    ok = ok + 1
  else
    other = other + 1
  end
end

function done(summary, latency, requests)
  local tok, tother, tover = 0, 0, 0
  for _, t in ipairs(threads) do
    tok = tok + (t:get("ok") or 0)
    tother = tother + (t:get("other") or 0)
    tover = tover + (t:get("overshoot") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "ok": %d, "non2xx_or_overshoot": %d, ' ..
    '"overshoot": %d, "err_connect": %d, "err_read": %d, "err_write": %d, "err_status": %d, ' ..
    '"err_timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, tok, tother, tover, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max))
end

-- wrk script of the flask-hybrid bench: cycles through requests made ahead in Python.
--
-- The first script argument names a file of raw HTTP requests, each written as
-- "<length in bytes>\n<request>". Each wrk thread sends its own share (every n-th request,
-- n = the thread count), so no two threads send the same request (format J refuses a jti it
-- has seen). done() prints one JSON line: requests, duration, errors and latency percentiles.

local thread_count = 0

function setup(thread)
  thread:set("thread_index", thread_count)
  thread_count = thread_count + 1
end

local requests = {}
local next_request = 1

function init(args)
  local file = assert(io.open(args[1], "rb"))
  local data = file:read("*a")
  file:close()
  local threads = tonumber(args[2])
  local position, index = 1, 0
  while position <= #data do
    local newline = string.find(data, "\n", position, true)
    local length = tonumber(string.sub(data, position, newline - 1))
    if index % threads == thread_index then
      requests[#requests + 1] = string.sub(data, newline + 1, newline + length)
    end
    index = index + 1
    position = newline + 1 + length
  end
  if #requests == 0 then
    error("no requests for thread " .. thread_index)
  end
end

function request()
  local raw = requests[next_request]
  next_request = next_request + 1
  if next_request > #requests then
    next_request = 1
  end
  return raw
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "bytes": %d, "p50_us": %d, "p90_us": %d, ' ..
    '"p99_us": %d, "mean_us": %.1f, "connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d}\n',
    summary.requests, summary.duration, summary.bytes, latency:percentile(50),
    latency:percentile(90), latency:percentile(99), latency.mean, errors.connect, errors.read,
    errors.write, errors.status, errors.timeout))
end

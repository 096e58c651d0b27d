-- wrk script for bench/throughput.py and bench/hashing.py: one of four kinds of
-- request, chosen by environment variables (so the key never shows in `ps`).
--
--   BENCH_MODE   get | mailbox | alias   (default get)
--   BENCH_PATH   request path; for get, "%07d" in it is replaced by 1..BENCH_ROTATE
--   BENCH_ROTATE how many seeded mailboxes a get path rotates through (default 1)
--   BENCH_KEY    API key, sent as Authorization: Bearer (none for the bare app)
--   BENCH_RUN    a run id: creates name user "<mode>-<run>-<thread>-<n>", unique
--                across wrk threads and across runs on the same database
--
-- done() prints one line, "BENCH_RESULT {json}", that the Python side reads.

local mode = os.getenv("BENCH_MODE") or "get"
local path = os.getenv("BENCH_PATH") or "/"
local rotate = tonumber(os.getenv("BENCH_ROTATE") or "1")
local key = os.getenv("BENCH_KEY")
local run = os.getenv("BENCH_RUN") or "0"

local threads = 0

function setup(thread)
   threads = threads + 1
   thread:set("tid", threads)
end

local headers = {}
local counter = 0

function init(args)
   if key and key ~= "" then
      headers["Authorization"] = "Bearer " .. key
   end
   if mode ~= "get" then
      headers["Content-Type"] = "application/json"
   end
end

local function unique(prefix)
   counter = counter + 1
   return string.format("%s-%s-%d-%d@bench.example", prefix, run, tid or 0, counter)
end

function request()
   if mode == "mailbox" then
      local body = string.format(
         '{"address": "%s", "password": "summersun-bench"}', unique("m"))
      return wrk.format("POST", path, headers, body)
   elseif mode == "alias" then
      local body = string.format(
         '{"source": "%s", "destinations": ["user0000001@bench.example", "archive@example.net"]}',
         unique("a"))
      return wrk.format("POST", path, headers, body)
   end
   counter = counter + 1
   local target = path:gsub("%%07d", string.format("%07d", (counter - 1) % rotate + 1))
   return wrk.format("GET", target, headers)
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'BENCH_RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, '
         .. '"p99_us": %d, "max_us": %d, "errors_connect": %d, "errors_read": %d, '
         .. '"errors_write": %d, "errors_status": %d, "errors_timeout": %d}\n',
      summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end

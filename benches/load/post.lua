-- wrk script of the load benchmark (SPEC §7): POSTs one AdmissionReview body over and over
-- with Content-Type: application/json, counts every non-2xx answer as an error, and prints
-- one machine-readable line at the end.
--
--   BODY_FILE=benches/load/review-plain.json wrk -t1 -c16 -d10s --latency \
--       -s benches/load/post.lua https://127.0.0.1:8443/validate
--   (or: ... post.lua URL -- benches/load/review-plain.json)
--
-- EXPECT (optional, e.g. '"allowed":true'): a 2xx answer whose body does not contain this
-- text (plain find, no pattern) is counted in "unexpected", so a run that was answered
-- 200 allowed:false (say, a clone refused because a lookup failed) cannot pass for a good
-- one. The check is a plain substring search on a ~150-byte body, per answer.
--
-- The last line printed is
--   WRK_RESULT {"requests":N,"duration_us":N,"rps":X,"p50_us":N,"p90_us":N,"p99_us":N,
--               "p999_us":N,"max_us":N,"mean_us":X,"non2xx":N,"unexpected":N,
--               "socket_errors":N,"bytes":N}
-- where non2xx comes from this script (any status outside 200..299), socket_errors sums
-- wrk's connect/read/write/timeout errors, and the latencies are wrk's (µs).

local body_file = os.getenv("BODY_FILE")
local expect = os.getenv("EXPECT")
if expect == "" then
  expect = nil
end

local function read_body(path)
  local f, err = io.open(path, "rb")
  if not f then
    error("post.lua: cannot open body file " .. tostring(path) .. ": " .. tostring(err))
  end
  local data = f:read("*a")
  f:close()
  return data
end

local function use_body(path)
  wrk.method = "POST"
  wrk.body = read_body(path)
  wrk.headers["Content-Type"] = "application/json"
end

if body_file and body_file ~= "" then
  use_body(body_file)
end

-- Arguments after `--` on wrk's command line: the body file, if BODY_FILE is not set.
function init(args)
  if (not body_file or body_file == "") then
    if args[1] then
      use_body(args[1])
    else
      error("post.lua: set BODY_FILE or pass the body file after --")
    end
  end
  non2xx = 0
  unexpected = 0
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  elseif expect and not string.find(body, expect, 1, true) then
    unexpected = unexpected + 1
  end
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function done(summary, latency, requests)
  local bad, odd = 0, 0
  for _, thread in ipairs(threads) do
    bad = bad + (thread:get("non2xx") or 0)
    odd = odd + (thread:get("unexpected") or 0)
  end
  local e = summary.errors
  local socket_errors = e.connect + e.read + e.write + e.timeout
  local seconds = summary.duration / 1e6
  io.write(string.format(
    'WRK_RESULT {"requests":%d,"duration_us":%d,"rps":%.1f,"p50_us":%d,"p90_us":%d,' ..
    '"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.1f,"non2xx":%d,"unexpected":%d,' ..
    '"socket_errors":%d,"bytes":%d}\n',
    summary.requests, summary.duration, summary.requests / seconds,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean, bad, odd, socket_errors,
    summary.bytes))
end

-- Authenticated POST /api/agents: the API key comes from HUB_BENCH_API_KEY (never argv, so
-- it is not in the process list); each request carries a distinct agent name.
package.path = (os.getenv("HUB_BENCH_WRK_DIR") or ".") .. "/?.lua;" .. package.path
local report = require("report")

local key = os.getenv("HUB_BENCH_API_KEY")
if not key or key == "" then
  error("HUB_BENCH_API_KEY is not set")
end

local counter = 0
local thread_tag = tostring(math.random(100000, 999999))

request = function()
  counter = counter + 1
  local body = string.format(
    '{"name": "bench-%s-%d", "type": "worker", ' ..
    '"capabilities": [{"name": "compute", "proficiency": 0.8}]}',
    thread_tag, counter)
  return wrk.format("POST", "/api/agents", {
    ["Content-Type"] = "application/json",
    ["X-API-Key"] = key,
  }, body)
end

done = report.done

-- HUB_BENCH_MAX_REQUESTS: stop after that many responses (the RSS checkpoint after 10,000
-- requests); defined only then, as a response() callback makes wrk parse every reply.
local max_requests = tonumber(os.getenv("HUB_BENCH_MAX_REQUESTS") or "")
if max_requests then
  local seen = 0
  response = function(status, headers, body)
    seen = seen + 1
    if seen >= max_requests then
      wrk.thread:stop()
    end
  end
end

-- Authenticated GET of the URL given to wrk (X-API-Key from HUB_BENCH_API_KEY, never argv).
package.path = (os.getenv("HUB_BENCH_WRK_DIR") or ".") .. "/?.lua;" .. package.path
local report = require("report")

local key = os.getenv("HUB_BENCH_API_KEY")
if not key or key == "" then
  error("HUB_BENCH_API_KEY is not set")
end
wrk.headers["X-API-Key"] = key

done = report.done

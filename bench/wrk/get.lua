-- Plain GET of the URL given to wrk; only the JSON report is added.
package.path = (os.getenv("HUB_BENCH_WRK_DIR") or ".") .. "/?.lua;" .. package.path
local report = require("report")
done = report.done

-- wrk script: the old Pushgateway push of the seed's pipeline, one grouping key per target:
--   printf 'gitops_sync_status %s\n' "$STATUS" | curl --data-binary @- \
--     "$PUSHGATEWAY_URL/metrics/job/gitops/repo/$REPO/server/$SERVER"
-- Env: TARGETS (number of grouping keys, default 1000). Same 90/10 mix as post.lua.

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "report.lua")

local targets = tonumber(os.getenv("TARGETS") or "1000")
local thread_count = 0

function setup(thread)
  thread:set("thread_index", thread_count)
  thread_count = thread_count + 1
end

function init(args)
  counter = 0
  stride = tonumber(os.getenv("WRK_THREADS") or "2")
end

function request()
  counter = counter + 1
  local n = counter * stride + thread_index
  local target = n % targets
  local round = math.floor(n / targets)
  local value = ((round + target) % 10 == 0) and 1 or 0
  local path = string.format("/metrics/job/gitops/repo/repo-%d/server/server-%d", target % 50, target)
  return wrk.format("POST", path, nil, string.format("gitops_sync_status %d\n", value))
end

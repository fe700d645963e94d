-- wrk script: POST one drift-check snapshot per request to gitops-status-server.
-- Env: TARGETS (number of repo/server targets, default 1000); WRK_THREADS (this wrk's -t);
-- WRK_GENERATORS and WRK_GENERATOR (how many wrk processes share the run, and which one this is:
-- default 1 and 0) and WRK_EPOCH (their shared start, in Unix seconds; default now), so that wrks
-- loading two replicas at once never send the same check.
-- Mix: each target reports OUT_OF_SYNC (1-3 files) on one check in ten, SYNCED otherwise.
-- Every request carries a distinct (target, last_check), so each one stores a new snapshot.

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
  local threads = tonumber(os.getenv("WRK_THREADS") or "2")
  stride = threads * tonumber(os.getenv("WRK_GENERATORS") or "1")
  offset = tonumber(os.getenv("WRK_GENERATOR") or "0") * threads + thread_index
  -- Start two hours back so a long run never gets more than 5 minutes ahead of the clock.
  base_ms = (tonumber(os.getenv("WRK_EPOCH") or os.time()) - 7200) * 1000
  headers = { ["Content-Type"] = "application/json" }
end

local function iso(ms)
  local seconds = math.floor(ms / 1000)
  return os.date("!%Y-%m-%dT%H:%M:%S", seconds) .. string.format(".%03dZ", ms % 1000)
end

function request()
  counter = counter + 1
  local n = counter * stride + offset
  local target = n % targets
  local round = math.floor(n / targets)
  local body
  if (round + target) % 10 == 0 then
    local files = {}
    for i = 1, 1 + (n % 3) do
      files[i] = string.format('{"name":"conf.d/%02d-managed.conf"}', i)
    end
    body = string.format(
      '{"repo":"repo-%d","server":"server-%d","sync_status":"OUT_OF_SYNC","drift_count":%d,"files":[%s],"last_check":"%s"}',
      target % 50, target, #files, table.concat(files, ","), iso(base_ms + n))
  else
    body = string.format(
      '{"repo":"repo-%d","server":"server-%d","sync_status":"SYNCED","drift_count":0,"files":[],"last_check":"%s"}',
      target % 50, target, iso(base_ms + n))
  end
  return wrk.format("POST", "/api/status", headers, body)
end

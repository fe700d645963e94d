-- wrk script: POST one drift-check snapshot per request to gitops-status-server.
-- Env: TARGETS (number of repo/server targets, default 1000); WRK_THREADS (this wrk's -t);
-- WRK_GENERATORS and WRK_GENERATOR (how many wrk processes share the run, and which one this is:
-- default 1 and 0) and WRK_EPOCH (their shared start, in Unix seconds; default now), so that wrks
-- loading two replicas at once never send the same check.
-- ORDER: `random` (the default) picks each request's target from a seeded random sequence, as
-- uncoordinated CI pipelines on their own crons arrive; `round-robin` visits targets in turn, which
-- lays consecutive snapshots side by side in the (target_id, last_check) index and flatters the
-- writer. SEED (default 1) fixes the random sequence, so runs are repeatable. START_MS: see init.
-- Mix: one check in ten reports OUT_OF_SYNC (1-3 files), the rest SYNCED.
-- Every request carries a distinct last_check, so each one stores a new snapshot.

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
  -- START_MS: the first check's time instead, for loading onto a history whose checks reach
  -- about now (every check must be newer than the target's latest to be an append).
  if os.getenv("START_MS") then
    base_ms = tonumber(os.getenv("START_MS"))
  end
  headers = { ["Content-Type"] = "application/json" }
  random_order = (os.getenv("ORDER") or "random") ~= "round-robin"
  math.randomseed(tonumber(os.getenv("SEED") or "1") * 1000 + offset)
end

local function iso(ms)
  local seconds = math.floor(ms / 1000)
  return os.date("!%Y-%m-%dT%H:%M:%S", seconds) .. string.format(".%03dZ", ms % 1000)
end

function request()
  counter = counter + 1
  local n = counter * stride + offset
  local target, drifted
  if random_order then
    target = math.random(0, targets - 1)
    drifted = n % 10 == 0
  else
    target = n % targets
    drifted = (math.floor(n / targets) + target) % 10 == 0
  end
  local body
  if drifted then
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

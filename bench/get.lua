-- wrk script for plain GETs: only reports, in the RESULT line of report.lua.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "report.lua")

-- GET /audiences/{id} with ids drawn at random from $IDS_FILE ("id etag" lines).
local here = debug.getinfo(1, "S").source:sub(2):match("(.*/)") or "./"
dofile(here .. "headers.lua")
local ids = {}
for _, line in ipairs(read_lines(os.getenv("IDS_FILE"))) do ids[#ids + 1] = line:match("^(%S+)") end
local prefix = os.getenv("PATH_PREFIX") or "/data/core/ups/audiences/"
seed_random()
request = function()
  return wrk.format("GET", prefix .. ids[math.random(#ids)])
end

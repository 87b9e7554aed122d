-- A well-behaved tenant's mix: 70% GET by id, 15% a list page of 20, 15% create.
-- Ids come from $IDS_FILE ("id etag" lines); BENCH_ORG / BENCH_SANDBOX name the tenant.
local here = debug.getinfo(1, "S").source:sub(2):match("(.*/)") or "./"
dofile(here .. "headers.lua")
local ids = {}
for _, line in ipairs(read_lines(os.getenv("IDS_FILE"))) do ids[#ids + 1] = line:match("^(%S+)") end
local base = "/data/core/ups/audiences"
local counter = 0
local thread_tag = tostring({}):match("0x(%x+)") or "0"
seed_random()
request = function()
  local roll = math.random(100)
  if roll <= 70 then
    return wrk.format("GET", base .. "/" .. ids[math.random(#ids)])
  elseif roll <= 85 then
    return wrk.format("GET", base .. "?start=" .. math.random(0, 200) .. "&limit=20")
  end
  counter = counter + 1
  local body = string.format([[{"name":"mix %s-%d","description":"Created by the mix benchmark","expression":{"type":"PQL","format":"pql/text","value":"workAddress.country = \"US\""},"labels":["core/C1"],"ttlInDays":60}]], thread_tag, counter)
  return wrk.format("POST", base, nil, body)
end

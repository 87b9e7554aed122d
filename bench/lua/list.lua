-- GET /audiences?start=$START&limit=20 (the default sort, updateTime:desc, with totalCount).
local here = debug.getinfo(1, "S").source:sub(2):match("(.*/)") or "./"
dofile(here .. "headers.lua")
local path = string.format("/data/core/ups/audiences?start=%s&limit=%s", os.getenv("START") or "0", os.getenv("LIMIT") or "20")
request = function()
  return wrk.format("GET", path)
end

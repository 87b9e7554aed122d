-- PATCH /audiences/{id} with If-Match: each thread walks its own share of $IDS_FILE ("id etag"
-- lines) and remembers the new etag from every answer, so a tag is never stale unless someone
-- else wrote the audience.
local here = debug.getinfo(1, "S").source:sub(2):match("(.*/)") or "./"
dofile(here .. "headers.lua")
local prefix = os.getenv("PATH_PREFIX") or "/data/core/ups/audiences/"
local threads, counter = 0, 0
setup = function(thread)
  thread:set("thread_index", threads)
  threads = threads + 1
end
local ids, etags, next_index = {}, {}, 1
init = function(args)
  local n = tonumber(os.getenv("THREADS") or "2")
  local i = 0
  for _, line in ipairs(read_lines(os.getenv("IDS_FILE"))) do
    if i % n == thread_index then
      local id, etag = line:match("^(%S+)%s+(.+)$")
      ids[#ids + 1] = id
      etags[id] = etag
    end
    i = i + 1
  end
end
request = function()
  local id = ids[next_index]
  next_index = next_index % #ids + 1
  counter = counter + 1
  local body = string.format('[{"op":"add","path":"/description","value":"patched %d"}]', counter)
  wrk.headers["If-Match"] = etags[id]
  return wrk.format("PATCH", prefix .. id, nil, body)
end
response = function(status, headers, body)
  local etag = headers["etag"] or headers["ETag"]
  local id = body:match('^{"id":"([^"]+)"')
  if etag and id then etags[id] = etag end
end

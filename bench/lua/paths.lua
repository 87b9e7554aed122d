-- GET a path drawn at random from $PATHS_FILE (one path and query per line), for example the
-- `_links.next.href` targets bench/walk.py collected.
local here = debug.getinfo(1, "S").source:sub(2):match("(.*/)") or "./"
dofile(here .. "headers.lua")
local paths = read_lines(os.getenv("PATHS_FILE"))
seed_random()
request = function()
  return wrk.format("GET", paths[math.random(#paths)])
end

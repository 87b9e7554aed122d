-- GET the URL's path with the API headers (an unknown path, a fixed list page).
local here = debug.getinfo(1, "S").source:sub(2):match("(.*/)") or "./"
dofile(here .. "headers.lua")

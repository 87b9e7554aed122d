-- The naive server's keyset page of 20: GET /page?s=N with N drawn at random in [21, 100000].
math.randomseed(os.time() + (tonumber(tostring({}):match("0x(%x+)") or "1", 16) % 100000))
request = function()
  return wrk.format("GET", "/page?s=" .. math.random(21, 100000))
end

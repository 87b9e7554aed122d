-- The four headers every API call carries; loaded by the other scripts.
wrk.headers["Authorization"] = "Bearer bench-token"
wrk.headers["x-api-key"] = "bench"
wrk.headers["x-gw-ims-org-id"] = os.getenv("BENCH_ORG") or "BENCH@AdobeOrg"
wrk.headers["x-sandbox-name"] = os.getenv("BENCH_SANDBOX") or "prod"
wrk.headers["Content-Type"] = "application/json"

-- Lines of a file as a list.
function read_lines(path)
  local out = {}
  for line in io.lines(path) do if #line > 0 then out[#out + 1] = line end end
  assert(#out > 0, "no lines in " .. path)
  return out
end

function seed_random()
  math.randomseed(os.time() + (tonumber(tostring({}):match("0x(%x+)") or "1", 16) % 100000))
end

-- POST /audiences with a seed-shaped body (about 1 KB); each request a new name.
local here = debug.getinfo(1, "S").source:sub(2):match("(.*/)") or "./"
dofile(here .. "headers.lua")
wrk.method = "POST"
local counter = 0
local thread_tag = tostring({}):match("0x(%x+)") or "0"
request = function()
  counter = counter + 1
  local body = string.format([[{"name":"bench %s-%d","profileInstanceId":"ups","description":"Created by the create benchmark","type":"SegmentDefinition","expression":{"type":"PQL","format":"pql/text","value":"workAddress.country = \"US\" and person.birthYear > 1980"},"schema":{"name":"_xdm.context.profile"},"mergePolicyId":"ef006bbe-750e-4e81-85f0-0c6902192dcc","evaluationInfo":{"batch":{"enabled":false},"continuous":{"enabled":true},"synchronous":{"enabled":false}},"dataGovernancePolicy":{"excludeOptOut":true},"labels":["core/C1"],"ttlInDays":60}]], thread_tag, counter)
  return wrk.format(nil, nil, nil, body)
end

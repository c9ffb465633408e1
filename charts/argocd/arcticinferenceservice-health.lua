-- Argo CD health check for ArcticInferenceService (serving.arctic-serve.dev).
-- Reads only what the operator writes into status: observedGeneration and the Ready, Progressing
-- and Degraded conditions. Order matters: a spec the operator has not acted on yet is Progressing
-- whatever the old conditions say; Degraded wins over Progressing; Healthy needs Ready=True.
local hs = {}
if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the arctic-serve operator to report status"
  return hs
end
local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "The operator has not acted on generation " .. tostring(generation) .. " yet"
  return hs
end
local ready, progressing, degraded = nil, nil, nil
if obj.status.conditions ~= nil then
  for _, c in ipairs(obj.status.conditions) do
    if c.type == "Ready" then
      ready = c
    elseif c.type == "Progressing" then
      progressing = c
    elseif c.type == "Degraded" then
      degraded = c
    end
  end
end
local function describe(c, fallback)
  local reason = c.reason or ""
  local message = c.message or ""
  if message == "" then
    return reason ~= "" and reason or fallback
  end
  if reason == "" then
    return message
  end
  return reason .. ": " .. message
end
if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(degraded, "Degraded")
  return hs
end
if progressing ~= nil and progressing.status == "True" then
  hs.status = "Progressing"
  hs.message = describe(progressing, "Rolling out")
  return hs
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready, "Ready")
  return hs
end
hs.status = "Progressing"
if ready ~= nil then
  hs.message = describe(ready, "Waiting for ready replicas")
else
  hs.message = "Waiting for ready replicas"
end
return hs

-- Argo CD health check for pullprobe.io/ImagePreflight (resource.customizations.health.
-- pullprobe.io_ImagePreflight in argocd-cm, examples/argocd/argocd-cm.yaml). It reads the
-- kstatus conditions the pullprobe controller writes, as Flux and `kubectl wait` do:
--   no status yet, an old generation, or Reconciling True  -> Progressing
--   Failed True (some node cannot pull), or Ready False      -> Degraded
--   Ready True                                               -> Healthy
-- Written for Argo CD's Lua (gopher-lua, Lua 5.1); tests/gitops.rs runs it on fixtures.
local hs = {}
local function summary(fallback)
  if obj.status ~= nil and obj.status.summary ~= nil and obj.status.summary.line ~= nil
      and obj.status.summary.line ~= "" then
    return obj.status.summary.line
  end
  return fallback
end
if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the pullprobe controller to check the images"
  return hs
end
local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end
if generation ~= nil and obj.status.observedGeneration ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the pullprobe controller to check generation " .. tostring(generation)
  return hs
end
local ready, failed, reconciling = nil, nil, nil
for _, c in ipairs(obj.status.conditions) do
  if c.type == "Ready" then
    ready = c
  elseif c.type == "Failed" then
    failed = c
  elseif c.type == "Reconciling" then
    reconciling = c
  end
end
if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = reconciling.message or "Checking"
  return hs
end
if failed ~= nil and failed.status == "True" then
  hs.status = "Degraded"
  hs.message = summary(failed.message or "Some nodes cannot pull the images")
  return hs
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = summary(ready.message or "Every node can pull the images")
  return hs
end
if ready ~= nil and ready.status == "False" then
  hs.status = "Degraded"
  hs.message = summary(ready.message or "Not every node can pull the images")
  return hs
end
hs.status = "Progressing"
hs.message = "Waiting for the pullprobe controller to check the images"
return hs

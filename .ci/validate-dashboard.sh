#!/usr/bin/env bash
# Validates dashboards/pullprobe.json against Grafana's own dashboard schema: the TypeScript types
# Grafana generates from its CUE schemas and publishes as npm @grafana/schema (raw/dashboard/x:
# `Dashboard`; raw/composable/<panel>/panelcfg/x: each panel plugin's `Options` and `FieldConfig`),
# turned into JSON Schema by ts-json-schema-generator (interfaces closed: an unknown field is an
# error; enums become their values) and checked with ajv. Every package is pinned and installed
# once from the npm registry into the cache (npm only: no install scripts run); offline after that.
#
#   PULLPROBE_CACHE   cache root (default /var/cache/pullprobe)
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMA_VERSION=13.2.3
CACHE_ROOT="${PULLPROBE_CACHE:-/var/cache/pullprobe}"
DIR="$CACHE_ROOT/grafana-schema-$SCHEMA_VERSION"
DASHBOARD="${1:-dashboards/pullprobe.json}"

log() { echo "[validate-dashboard] $*" >&2; }

if [ ! -f "$DIR/.installed" ]; then
    command -v npm >/dev/null || { log "npm is needed (node + npm are on this machine image)"; exit 1; }
    mkdir -p "$CACHE_ROOT"
    exec 9>"$CACHE_ROOT/.grafana-schema.lock"
    flock 9
    if [ ! -f "$DIR/.installed" ]; then
        log "installing @grafana/schema@$SCHEMA_VERSION, ts-json-schema-generator, ajv into $DIR"
        rm -rf "$DIR" && mkdir -p "$DIR"
        cat >"$DIR/package.json" <<JSON
{"name": "pullprobe-dashboard-validation", "private": true,
 "dependencies": {"@grafana/schema": "$SCHEMA_VERSION", "ts-json-schema-generator": "2.10.0",
                  "typescript": "5.9.3", "ajv": "8.20.0"}}
JSON
        (cd "$DIR" && npm install --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
        touch "$DIR/.installed"
    fi
    flock -u 9
fi

NODE_PATH="$DIR/node_modules" node - "$DIR" "$DASHBOARD" <<'JS'
const fs = require("fs"), path = require("path");
const [dir, file] = process.argv.slice(2);
const tsj = require("ts-json-schema-generator");
const Ajv = require("ajv");
const raw = path.join(dir, "node_modules/@grafana/schema/dist/types/raw");
const cacheDir = path.join(dir, "schemas");
fs.mkdirSync(cacheDir, { recursive: true });
// One JSON Schema per (file, type), generated once and cached.
function schema(rel, type) {
  const out = path.join(cacheDir, `${rel.replace(/\W/g, "_")}.${type}.json`);
  if (!fs.existsSync(out)) {
    const s = tsj.createGenerator({ path: path.join(raw, rel), type, skipTypeCheck: true,
      tsconfig: undefined, additionalProperties: false, expose: "all", topRef: true }).createSchema(type);
    fs.writeFileSync(out, JSON.stringify(s));
  }
  return JSON.parse(fs.readFileSync(out, "utf8"));
}
const ajv = new Ajv({ allErrors: true, strict: false });
const errors = [];
function check(what, rel, type, value) {
  const validate = ajv.compile(schema(rel, type));
  if (!validate(value)) {
    for (const e of validate.errors) errors.push(`${what}${e.instancePath}: ${e.message} ${JSON.stringify(e.params)}`);
  }
}
const d = JSON.parse(fs.readFileSync(file, "utf8"));
check("dashboard", "dashboard/x/types.gen.d.ts", "Dashboard", d);
// Each panel's plugin options and custom field config against that plugin's schema.
const plugin = { timeseries: "timeseries", stat: "stat", table: "table", bargauge: "bargauge",
                 "status-history": "statushistory" };
let panels = 0;
for (const p of d.panels || []) {
  if (p.type === "row") continue;
  panels++;
  const dirName = plugin[p.type];
  if (!dirName) { errors.push(`panel "${p.title}": panel type ${p.type} has no schema here`); continue; }
  const rel = `composable/${dirName}/panelcfg/x/types.gen.d.ts`;
  check(`panel "${p.title}" options`, rel, "Options", p.options || {});
  const custom = ((p.fieldConfig || {}).defaults || {}).custom;
  if (custom) check(`panel "${p.title}" fieldConfig.defaults.custom`, rel, "FieldConfig", custom);
  for (const t of p.targets || []) {
    if (!t.expr || !t.refId || !t.datasource) errors.push(`panel "${p.title}": target without expr/refId/datasource`);
  }
}
if (errors.length) { for (const e of errors) console.error(`[validate-dashboard] ${e}`); process.exit(1); }
console.error(`[validate-dashboard] ${file}: valid (Dashboard + ${panels} panels' options, @grafana/schema)`);
JS

'use strict';
// Checks that a dashboard is one Grafana 10+ imports as it is:
//   * typeCheck: every dashboard, row and panel, written as a TypeScript
//     literal, must be assignable to the types of the `@grafana/schema`
//     package (the dashboard and panel schemas Grafana's own code is built
//     from): Dashboard, RowPanel, and per panel type the plugin's Options and
//     FieldConfig, with PrometheusDataQuery targets. Object literals get
//     TypeScript's excess-property check, so a misspelt or misplaced key
//     fails as well as a wrong type or a missing required field.
//   * structure: what no type says: unique panel ids, panels on the 24-column
//     grid without overlaps, the datasource variable on every panel and
//     target, every $variable defined, the node/shard/member filters.

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const { allPanels, variables, variableQuery, referencedVariables, selectors, metricName, matchers, BUILTINS } =
  require('./grafana');

const NODE_MODULES = path.resolve(__dirname, '..', 'node_modules');
const PANELCFG = '@grafana/schema/dist/esm/raw/composable';

// Panel types the dashboards may use, with their plugin's option types.
const PANEL_TYPES = {
  timeseries: { module: `${PANELCFG}/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen`, custom: 'FieldConfig' },
  stat: { module: `${PANELCFG}/stat/panelcfg/x/StatPanelCfg_types.gen`, custom: null },
  bargauge: { module: `${PANELCFG}/bargauge/panelcfg/x/BarGaugePanelCfg_types.gen`, custom: null },
  table: { module: `${PANELCFG}/table/panelcfg/x/TablePanelCfg_types.gen`, custom: 'FieldConfig' },
  'state-timeline': { module: `${PANELCFG}/statetimeline/panelcfg/x/StateTimelinePanelCfg_types.gen`, custom: 'FieldConfig' },
};

const DATASOURCE = { type: 'prometheus', uid: '${datasource}' };

// The broker's series per member node: their `peer` label is another node's
// name (docs/METRICS.md), not a shard's as on the broker's per-shard series.
const MEMBER_SERIES = new Set([
  'switchboard_broker_peer_up', 'switchboard_broker_peer_inbound_up', 'switchboard_broker_peer_rtt_seconds',
  'switchboard_broker_peer_link_downs_total', 'switchboard_broker_peer_queue_messages',
  'switchboard_broker_peer_queue_bytes', 'switchboard_broker_peer_routed_total', 'switchboard_broker_peer_dropped_total',
  'switchboard_broker_peer_interest_topics', 'switchboard_broker_peer_credit', 'switchboard_broker_peer_in_flight',
]);
// The queues of the design whose `peer` is a member node too (docs/METRICS.md,
// Queues first): the outbox to it and what came from it.
const MEMBER_QUEUES = new Set(['peer_out', 'peer_in']);

function ident(s) {
  return s.replace(/[^A-Za-z0-9_]/g, '_');
}

// The TypeScript program: one typed constant per dashboard, row and panel.
function typeCheckSource(dashboards) {
  const lines = [];
  lines.push("import type { Dashboard, RowPanel } from '@grafana/schema';");
  lines.push("import type * as raw from '@grafana/schema/dist/esm/raw/dashboard/x/dashboard_types.gen';");
  lines.push("import type { PrometheusDataQuery } from '@grafana/schema/dist/esm/raw/composable/prometheus/dataquery/x/PrometheusDataQuery_types.gen';");
  for (const [type, { module }] of Object.entries(PANEL_TYPES)) lines.push(`import type * as ${ident(type)} from '${module}';`);
  lines.push(`
// Dashboard JSON has no enums: a string enum accepts the strings it stands for.
type Json<T> = T extends string ? \`\${T}\`
  : T extends number | boolean | null | undefined ? T
  : T extends ReadonlyArray<infer U> ? Json<U>[]
  : T extends object ? { [K in keyof T]: Json<T[K]> }
  : T;
type FieldConfigOf<C> = Omit<raw.FieldConfig, 'custom'> & { custom?: C };
type PanelOf<Type extends string, O, C> = Omit<raw.Panel, 'type' | 'options' | 'fieldConfig' | 'targets'> & {
  type: Type;
  options: O;
  fieldConfig: Omit<raw.FieldConfigSource, 'defaults'> & { defaults: FieldConfigOf<C> };
  targets: PrometheusDataQuery[];
};
type NoCustom = Record<string, never>;
`);
  for (const [type, { custom }] of Object.entries(PANEL_TYPES)) {
    const t = ident(type);
    lines.push(`type Panel_${t} = Json<PanelOf<'${type}', ${t}.Options, ${custom ? `${t}.${custom}` : 'NoCustom'}>>;`);
  }
  for (const { file, json } of dashboards) {
    const d = ident(file.replace(/\.json$/, ''));
    const { panels, ...rest } = json;
    lines.push(`export const ${d}: Json<Omit<Dashboard, 'panels'>> = ${JSON.stringify(rest, null, 2)};`);
    for (const p of allPanels(json)) {
      const name = `${d}_panel_${p.id}`;
      if (p.type === 'row') {
        lines.push(`export const ${name}: Json<RowPanel> = ${JSON.stringify(p, null, 2)};`);
      } else if (PANEL_TYPES[p.type]) {
        lines.push(`export const ${name}: Panel_${ident(p.type)} = ${JSON.stringify(p, null, 2)};`);
      }
    }
  }
  return `${lines.join('\n')}\n`;
}

// Runs tsc on the program; returns its diagnostics ('' when it passes).
function typeCheck(dashboards) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sb-dash-tsc-'));
  try {
    fs.writeFileSync(path.join(dir, 'dashboards.ts'), typeCheckSource(dashboards));
    fs.writeFileSync(path.join(dir, 'tsconfig.json'), JSON.stringify({
      compilerOptions: {
        strict: true,
        noEmit: true,
        target: 'es2020',
        module: 'commonjs',
        moduleResolution: 'node',
        baseUrl: NODE_MODULES, // '@grafana/schema' resolves in tests/dashboards/node_modules
        types: [],
        skipLibCheck: true,
      },
      files: ['dashboards.ts'],
    }));
    try {
      execFileSync(process.execPath, [path.join(NODE_MODULES, 'typescript', 'bin', 'tsc'), '-p', dir, '--pretty', 'false'],
        { cwd: dir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
      return '';
    } catch (e) {
      return `${e.stdout || ''}${e.stderr || ''}`.trim() || e.message;
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const sameDatasource = (ds) => ds && ds.type === DATASOURCE.type && ds.uid === DATASOURCE.uid;

// Problems Grafana's types do not catch; returns a list of messages.
function structure({ file, json }) {
  const problems = [];
  const say = (msg) => problems.push(`${file}: ${msg}`);
  if (typeof json.uid !== 'string' || !/^[A-Za-z0-9_-]{1,40}$/.test(json.uid)) say(`uid '${json.uid}' is not a valid dashboard uid`);
  if (!json.title) say('no title');
  if (!(json.schemaVersion >= 36 && json.schemaVersion <= 39)) say(`schemaVersion ${json.schemaVersion}: Grafana 10 writes 36-39`);
  if (json.id !== null && json.id !== undefined) say('id must be null (Grafana assigns it on import)');

  // Template variables.
  const vars = variables(json);
  const names = vars.map((v) => v.name);
  if (new Set(names).size !== names.length) say(`duplicate template variables: ${names.join(', ')}`);
  const byName = new Map(vars.map((v) => [v.name, v]));
  const ds = byName.get('datasource');
  if (!ds || ds.type !== 'datasource' || ds.query !== 'prometheus') say('no `datasource` variable of type datasource (query prometheus)');
  // `node` on every dashboard; `shard` (gateway shards) and `peer` (member
  // nodes) where a dashboard has them: the selector checks below say which
  // series need which.
  for (const name of ['node', 'shard', 'peer']) {
    const v = byName.get(name);
    if (!v && name !== 'node') continue;
    if (!v || v.type !== 'query') {
      say(`no \`${name}\` query variable`);
      continue;
    }
    if (!sameDatasource(v.datasource)) say(`variable ${name}: datasource must be ${JSON.stringify(DATASOURCE)}`);
    if (!/^label_values\(.+,\s*\w+\)$/.test(variableQuery(v))) say(`variable ${name}: query '${variableQuery(v)}' is not label_values(selector, label)`);
    if (!v.multi || !v.includeAll) say(`variable ${name}: multi-value with "All" expected`);
  }
  const defined = (n) => byName.has(n) || BUILTINS.has(n);
  for (const v of vars) {
    for (const r of referencedVariables(variableQuery(v))) if (!defined(r)) say(`variable ${v.name} uses undefined $${r}`);
    const pos = names.indexOf(v.name);
    for (const r of referencedVariables(variableQuery(v))) {
      if (byName.has(r) && names.indexOf(r) > pos) say(`variable ${v.name} uses $${r}, which is defined after it`);
    }
  }

  // Panels.
  const panels = allPanels(json);
  const ids = new Map();
  const rects = [];
  for (const p of panels) {
    const where = `panel ${p.id} "${p.title}"`;
    if (!Number.isInteger(p.id) || p.id <= 0) say(`${where}: id must be a positive integer`);
    else if (ids.has(p.id)) say(`${where}: id ${p.id} also used by "${ids.get(p.id)}"`);
    else ids.set(p.id, p.title);
    if (!p.title) say(`${where}: no title`);
    const g = p.gridPos;
    if (!g || ![g.x, g.y, g.w, g.h].every(Number.isInteger) || g.x < 0 || g.y < 0 || g.w < 1 || g.h < 1 || g.x + g.w > 24) {
      say(`${where}: gridPos ${JSON.stringify(g)} is not on the 24-column grid`);
    } else {
      for (const r of rects) {
        if (g.x < r.g.x + r.g.w && r.g.x < g.x + g.w && g.y < r.g.y + r.g.h && r.g.y < g.y + g.h) {
          say(`${where}: overlaps panel ${r.id} "${r.title}"`);
        }
      }
      rects.push({ g, id: p.id, title: p.title });
    }
    if (p.type === 'row') {
      if (g && (g.w !== 24 || g.h !== 1 || g.x !== 0)) say(`${where}: a row is 24 wide and 1 high at x 0`);
      if (!p.collapsed && (p.panels || []).length > 0) say(`${where}: an expanded row keeps its panels at the top level`);
      continue;
    }
    if (!PANEL_TYPES[p.type]) say(`${where}: panel type '${p.type}' is not one of ${Object.keys(PANEL_TYPES).join(', ')}`);
    if (!p.description) say(`${where}: no description (operators read it from the panel header)`);
    if (!sameDatasource(p.datasource)) say(`${where}: datasource must be ${JSON.stringify(DATASOURCE)}`);
    const targets = p.targets || [];
    if (targets.length === 0) say(`${where}: no targets`);
    const refIds = new Set();
    for (const t of targets) {
      const tw = `${where} target ${t.refId}`;
      if (!t.refId || refIds.has(t.refId)) say(`${tw}: missing or duplicate refId`);
      refIds.add(t.refId);
      if (!sameDatasource(t.datasource)) say(`${tw}: datasource must be ${JSON.stringify(DATASOURCE)}`);
      if (typeof t.expr !== 'string' || !t.expr.trim()) {
        say(`${tw}: no expr`);
        continue;
      }
      for (const r of referencedVariables(t.expr)) if (!defined(r)) say(`${tw}: uses undefined $${r}`);
      for (const sel of selectors(t.expr)) {
        const name = metricName(sel);
        const ms = matchers(sel);
        const has = (label, value) => ms.some((m) => m.label === label && m.op === '=~' && m.value === value);
        if (!name.startsWith('switchboard_')) say(`${tw}: selector ${sel} does not read a switchboard_ metric`);
        if (!has('node', '$node')) say(`${tw}: selector ${sel} lacks node=~"$node"`);
        if (name.startsWith('switchboard_worker_') && !has('shard', '$shard')) say(`${tw}: selector ${sel} lacks shard=~"$shard"`);
        const memberQueue = ms.some((m) => m.label === 'queue' && m.op === '=' && MEMBER_QUEUES.has(m.value));
        if (MEMBER_SERIES.has(name) || memberQueue) {
          if (!has('peer', '$peer')) say(`${tw}: selector ${sel} (per member node) lacks peer=~"$peer"`);
        } else if (ms.some((m) => m.label === 'peer') && !has('peer', '$shard')) {
          say(`${tw}: selector ${sel} filters peer without $shard`);
        }
      }
    }
  }
  // Unused variables are dead weight on the dashboard's header.
  const used = new Set();
  for (const p of panels) for (const t of p.targets || []) for (const r of referencedVariables(t.expr)) used.add(r);
  for (const p of panels) if (p.datasource) for (const r of referencedVariables(p.datasource.uid)) used.add(r);
  for (const v of vars) for (const r of referencedVariables(variableQuery(v))) used.add(r);
  for (const n of names) if (!used.has(n)) say(`variable ${n} is never used`);
  return problems;
}

module.exports = { typeCheck, typeCheckSource, structure, PANEL_TYPES };

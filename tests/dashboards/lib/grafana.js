'use strict';
// Reading the shipped dashboards and rules the way Grafana and Prometheus
// read them: every panel target, the template variables and how Grafana
// expands them into PromQL, and the metric selectors inside a PromQL
// expression (so each one can be checked on its own).

const fs = require('node:fs');
const path = require('node:path');
const YAML = require('yaml');

const REPO = path.resolve(__dirname, '..', '..', '..');
const DASHBOARDS_DIR = path.join(REPO, 'dashboards');
const PROMETHEUS_DIR = path.join(REPO, 'prometheus');

// What only a cluster of several nodes shows: the mesh dashboard and the
// mesh alert rules read the brokers' per-member series, which a node alone
// does not have. mesh.test.js proves them on three nodes;
// prometheus.test.js, on one node, proves the rest.
const MESH_DASHBOARDS = new Set(['cluster-nodes.json']);
const MESH_RULE_GROUPS = new Set(['switchboard-mesh']);

// Every *.json in dashboards/: [{file, json}].
function loadDashboards() {
  return fs.readdirSync(DASHBOARDS_DIR)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((f) => ({ file: f, json: JSON.parse(fs.readFileSync(path.join(DASHBOARDS_DIR, f), 'utf8')) }));
}

// Every panel of a dashboard, rows' nested panels included (collapsed rows
// keep theirs inside).
function allPanels(dashboard) {
  const out = [];
  for (const p of dashboard.panels || []) {
    out.push(p);
    if (p.type === 'row') out.push(...(p.panels || []));
  }
  return out;
}

// Every query target: {dashboard (file), panelId, panelTitle, panelType, refId, expr, legendFormat, instant}.
function panelTargets({ file, json }) {
  const out = [];
  for (const p of allPanels(json)) {
    if (p.type === 'row') continue;
    for (const t of p.targets || []) {
      out.push({
        dashboard: file,
        panelId: p.id,
        panelTitle: p.title,
        panelType: p.type,
        refId: t.refId,
        expr: t.expr,
        legendFormat: t.legendFormat,
        instant: !!t.instant,
      });
    }
  }
  return out;
}

function variables(dashboard) {
  return (dashboard.templating && dashboard.templating.list) || [];
}

// A variable query's PromQL text (Grafana 10 stores a string, or {query}).
function variableQuery(v) {
  if (typeof v.query === 'string') return v.query;
  if (v.query && typeof v.query.query === 'string') return v.query.query;
  return '';
}

// Grafana's built-in variables that may appear in a Prometheus query.
const BUILTINS = new Set(['__rate_interval', '__interval', '__interval_ms', '__range', '__range_s', '__range_ms']);

// Every variable reference in `text`: $name, ${name}, ${name:format}, [[name]].
const VAR_RE = /\$\{(\w+)(?::(\w+))?\}|\$(\w+)|\[\[(\w+)(?::(\w+))?\]\]/g;

function referencedVariables(text) {
  const names = new Set();
  for (const m of String(text).matchAll(VAR_RE)) names.add(m[1] || m[3] || m[4]);
  return [...names];
}

// Grafana's escaping of a value written into a PromQL string literal: a
// regex metacharacter becomes \\x (a backslash for the regex, doubled for the
// string).
function escapeRegex(s) {
  return String(s).replace(/\\/g, '\\\\\\\\').replace(/[$^*{}[\]'+?.()|]/g, '\\\\$&');
}

// How Grafana's Prometheus data source writes a variable's value into a
// query (interpolateQueryExpr): a variable that is neither multi-value nor
// has "All" gets its value as it is (quotes and backslashes escaped); the
// others get each value regex-escaped, one value alone, several (or "All"
// without a custom all value) as (a|b|...).
function formatValue(variable, values) {
  if (!Array.isArray(values)) values = [values];
  if (!variable.multi && !variable.includeAll) return String(values[0]).replace(/\\/g, '\\\\').replace(/'/g, "\\\\'");
  const escaped = values.map(escapeRegex);
  return escaped.length === 1 ? escaped[0] : `(${escaped.join('|')})`;
}

// Expands every variable in `expr`. `values`: name → the selected values
// (array); builtins: name → text. Throws on an undefined variable.
function expand(expr, dashboard, values, builtins) {
  const byName = new Map(variables(dashboard).map((v) => [v.name, v]));
  return String(expr).replace(VAR_RE, (all, a, fmtA, b, c) => {
    const name = a || b || c;
    if (BUILTINS.has(name)) {
      if (!(name in builtins)) throw new Error(`no value for the built-in variable $${name}`);
      return builtins[name];
    }
    const v = byName.get(name);
    if (!v) throw new Error(`variable $${name} is not defined in the dashboard's templating`);
    if (!(name in values)) throw new Error(`no value chosen for $${name}`);
    return formatValue(v, values[name]);
  });
}

// --- PromQL selectors -------------------------------------------------------

const KEYWORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'and', 'or', 'unless',
  'offset', 'bool', 'atan2', 'inf', 'nan', 'start', 'end']);
// Aggregation operators: `sum by (x) (...)` puts a label list between the
// name and its "(".
const AGGREGATIONS = new Set(['sum', 'min', 'max', 'avg', 'group', 'stddev', 'stdvar', 'count', 'count_values',
  'bottomk', 'topk', 'quantile']);
// Keywords followed by a parenthesised list of label names (not a call).
const LABEL_LIST = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right']);

// The vector selectors of a PromQL expression: ['metric{a="b"}', ...], in
// order, without duplicates. A small tokenizer: skips strings, numbers,
// durations in [...], function names (an identifier followed by "("), and
// the label lists of by/on/ignoring/group_left/...
function selectors(expr) {
  const s = String(expr);
  const out = [];
  let i = 0;
  const skipString = (j) => {
    const q = s[j];
    j++;
    while (j < s.length && s[j] !== q) j += s[j] === '\\' ? 2 : 1;
    return j + 1;
  };
  const skipSpace = (j) => {
    while (j < s.length && /\s/.test(s[j])) j++;
    return j;
  };
  const braces = (j) => { // s[j] === '{' → index after the matching '}'
    j++;
    while (j < s.length && s[j] !== '}') j = (s[j] === '"' || s[j] === "'" || s[j] === '`') ? skipString(j) : j + 1;
    return j + 1;
  };
  while (i < s.length) {
    const ch = s[i];
    if (ch === '"' || ch === "'" || ch === '`') {
      i = skipString(i);
    } else if (ch === '[') {
      while (i < s.length && s[i] !== ']') i++;
      i++;
    } else if (ch === '{') { // a selector without a metric name
      const end = braces(i);
      out.push(s.slice(i, end));
      i = end;
    } else if (/[A-Za-z_:]/.test(ch)) {
      let j = i;
      while (j < s.length && /[A-Za-z0-9_:]/.test(s[j])) j++;
      const word = s.slice(i, j);
      const k = skipSpace(j);
      if (LABEL_LIST.has(word.toLowerCase())) {
        if (s[k] === '(') {
          let e = k;
          while (e < s.length && s[e] !== ')') e++;
          i = e + 1;
        } else {
          i = j;
        }
      } else if (KEYWORDS.has(word.toLowerCase()) || AGGREGATIONS.has(word.toLowerCase())) {
        i = j;
      } else if (s[k] === '(') { // a function or an aggregation
        i = j;
      } else if (s[k] === '{') {
        const end = braces(k);
        out.push(word + s.slice(k, end).replace(/\s+/g, ' '));
        i = end;
      } else {
        out.push(word);
        i = j;
      }
    } else if (/[0-9.]/.test(ch)) { // a number or a duration (5m, 1h30m, 1e3, 0x1f)
      while (i < s.length && /[0-9A-Za-z_.]/.test(s[i])) i++;
    } else {
      i++;
    }
  }
  return [...new Set(out)];
}

// The metric name of a selector ('' when it has none).
function metricName(selector) {
  const m = /^[A-Za-z_:][A-Za-z0-9_:]*/.exec(selector);
  return m ? m[0] : '';
}

// The label matchers of a selector: [{label, op, value}].
function matchers(selector) {
  const open = selector.indexOf('{');
  if (open < 0) return [];
  const body = selector.slice(open + 1, selector.lastIndexOf('}'));
  const out = [];
  const re = /\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*,?/g;
  for (const m of body.matchAll(re)) out.push({ label: m[1], op: m[2], value: m[3] });
  return out;
}

// --- Prometheus rules and configuration -------------------------------------

function loadYaml(file) {
  return YAML.parse(fs.readFileSync(file, 'utf8'));
}

// Every alerting (and recording) rule: [{group, name, expr, for}].
function loadRules(file = path.join(PROMETHEUS_DIR, 'alerts.yml')) {
  const doc = loadYaml(file);
  const out = [];
  for (const g of doc.groups || []) {
    for (const r of g.rules || []) out.push({ group: g.name, name: r.alert || r.record, expr: String(r.expr), for: r.for });
  }
  return out;
}

module.exports = {
  REPO, DASHBOARDS_DIR, PROMETHEUS_DIR, BUILTINS, MESH_DASHBOARDS, MESH_RULE_GROUPS,
  loadDashboards, allPanels, panelTargets, variables, variableQuery, referencedVariables, expand, escapeRegex,
  selectors, metricName, matchers, loadYaml, loadRules,
};

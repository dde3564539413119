'use strict';
// Asking a real Prometheus what each dashboard panel would show: every
// panel target with the template variables expanded as Grafana expands
// them, and each metric selector inside it on its own. Shared by the
// dashboards tests against a running cluster (prometheus.test.js on one
// node, mesh.test.js on three).

const assert = require('node:assert/strict');
const g = require('./grafana');
const { delay } = require('./stack');

const RESULT_WAIT_MS = 20000; // a target that returns nothing is retried this long (rates need 2 samples)
// What Grafana puts in for its built-in variables (the dashboards' default
// range is 1 h; $__rate_interval is at least 4 scrape intervals of the
// data source, 1 m with prometheus.yml's 15 s).
const BUILTINS = { __rate_interval: '1m', __interval: '15s', __interval_ms: '15000', __range: '1h', __range_s: '3600', __range_ms: '3600000' };
const RANGE_S = 120;
const STEP_S = 5;

const seriesName = (s) => JSON.stringify(s.metric);
const numbers = (s) => (s.values ? s.values.map((x) => Number(x[1])) : [Number(s.value[1])]);

// The checks against `prom` (lib/stack.js's Prometheus).
function panelChecks(prom) {
  // `step`: seconds between the points of a range query (Grafana's is
  // coarser than a short run's events; a test asks for finer).
  async function query(expr, { instant, step = STEP_S }) {
    const now = Date.now() / 1000;
    if (instant) return (await prom.api('query', { query: expr, time: now })).result;
    return (await prom.api('query_range', { query: expr, start: now - RANGE_S, end: now, step })).result;
  }

  // Label values the way Grafana's label_values(selector, label) gets them.
  async function labelValues(dashboard, v, values) {
    const q = g.variableQuery(v);
    const m = /^label_values\((.*),\s*(\w+)\s*\)$/.exec(q.trim());
    if (!m) throw new Error(`variable ${v.name}: unsupported query ${q}`);
    const now = Date.now() / 1000;
    return prom.api(`label/${m[2]}/values`, { 'match[]': g.expand(m[1], dashboard, values, BUILTINS), start: now - 3600, end: now });
  }

  // The values of every template variable of `dashboard`: "All" (every value
  // label_values finds) or only the first one.
  async function variableValues(dashboard, mode) {
    const values = {};
    for (const v of g.variables(dashboard)) {
      if (v.type === 'datasource') continue;
      const found = await labelValues(dashboard, v, values);
      if (found.length === 0) throw new Error(`variable $${v.name}: ${g.variableQuery(v)} finds no values`);
      values[v.name] = mode === 'all' ? found : [found[0]];
    }
    return values;
  }

  // Evaluates one target; returns a problem text or null. Retries an empty
  // result until `deadline`.
  async function checkTarget(t, expr, deadline) {
    for (;;) {
      let result;
      try {
        result = await query(expr, t);
      } catch (e) {
        return `error: ${e.message}`;
      }
      if (result.length > 0) {
        const wanted = [...String(t.legendFormat || '').matchAll(/\{\{\s*(\w+)\s*\}\}/g)].map((m) => m[1]);
        for (const s of result) {
          const missing = wanted.filter((l) => !(l in s.metric));
          if (missing.length) return `legend uses {{${missing.join('}}, {{')}}}, which series ${seriesName(s)} does not have`;
        }
        return null;
      }
      if (Date.now() >= deadline) return 'no series';
      await delay(500);
    }
  }

  async function checkSelectors(expr, deadline) {
    const problems = [];
    for (const sel of g.selectors(expr)) {
      for (;;) {
        let result;
        try {
          result = await prom.api('query', { query: `count(${sel})` });
        } catch (e) {
          problems.push(`selector ${sel}: error: ${e.message}`);
          break;
        }
        if (result.result.length > 0) break;
        if (Date.now() >= deadline) {
          problems.push(`selector ${sel}: no series`);
          break;
        }
        await delay(500);
      }
    }
    return problems;
  }

  // Every target of every dashboard, with its variables on "All" (`mode`
  // 'all') or on their first value ('first'): {count, problems}.
  async function checkDashboards(dashboards, mode) {
    const problems = [];
    let count = 0;
    const deadline = Date.now() + RESULT_WAIT_MS;
    for (const d of dashboards) {
      const values = await variableValues(d.json, mode);
      for (const t of g.panelTargets(d)) {
        count++;
        const where = `${d.file} panel ${t.panelId} "${t.panelTitle}" target ${t.refId}`;
        let expr;
        try {
          expr = g.expand(t.expr, d.json, values, BUILTINS);
        } catch (e) {
          problems.push(`${where}: ${e.message}`);
          continue;
        }
        const p = await checkTarget(t, expr, deadline);
        if (p) problems.push(`${where}: ${p}\n    ${expr}`);
        for (const sp of await checkSelectors(expr, deadline)) problems.push(`${where}: ${sp}`);
      }
    }
    return { count, problems };
  }

  // Every rule's expression evaluates and each selector in it returns
  // series: a list of problems.
  async function checkRules(rules) {
    const problems = [];
    const deadline = Date.now() + RESULT_WAIT_MS;
    for (const r of rules) {
      try {
        await prom.api('query', { query: r.expr });
      } catch (e) {
        problems.push(`${r.name}: error: ${e.message}`);
      }
      for (const p of await checkSelectors(r.expr, deadline)) problems.push(`${r.name}: ${p}`);
    }
    return problems;
  }

  // The value(s) a panel's target shows now (instant) or over the range
  // (points `step` seconds apart).
  async function panelValues(dashboards, file, title, refId = 'A', { step } = {}) {
    const d = dashboards.find((x) => x.file === file);
    const t = g.panelTargets(d).find((x) => x.panelTitle === title && x.refId === refId);
    if (!t) throw new Error(`${file} has no panel "${title}" with target ${refId}`);
    const values = await variableValues(d.json, 'all');
    const result = await query(g.expand(t.expr, d.json, values, BUILTINS), { instant: t.instant, step });
    return result.map((s) => ({ metric: s.metric, values: numbers(s).filter((v) => !Number.isNaN(v)) }));
  }

  async function firingAlerts() {
    return (await prom.api('alerts')).alerts.filter((a) => a.state === 'firing');
  }

  // The live tests' assertions on those checks: every target (with the
  // variables as `mode` sets them) returns series, every rule evaluates.
  async function assertDashboards(dashboards, mode, t) {
    const { count, problems } = await checkDashboards(dashboards, mode);
    t.diagnostic(`${count} targets checked`);
    if (problems.length) assert.fail(`${problems.length} panel target problems:\n${problems.join('\n')}`);
  }

  async function assertRules(rules) {
    const problems = await checkRules(rules);
    if (problems.length) assert.fail(`alert rule problems:\n${problems.join('\n')}`);
  }

  return {
    query, variableValues, checkDashboards, checkRules, checkSelectors, panelValues, firingAlerts,
    assertDashboards, assertRules,
  };
}

module.exports = { panelChecks, BUILTINS, RESULT_WAIT_MS };

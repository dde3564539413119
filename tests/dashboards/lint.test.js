'use strict';
// Static checks of dashboards/, prometheus/ and the provisioning files: the
// dashboards type-check against Grafana's own schema package and pass the
// structural checks Grafana's types cannot express; every metric they and
// the alert rules read is defined in common/metric_names.h; promtool accepts
// the rules and the configuration, and the rules' unit tests pass.

const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const g = require('./lib/grafana');
const schema = require('./lib/schema');

const dashboards = g.loadDashboards();
const rules = g.loadRules();

// promtool from the Debian `prometheus` package; the output of a failed run.
function promtool(args, cwd) {
  try {
    execFileSync('promtool', args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    return '';
  } catch (e) {
    if (e.code === 'ENOENT') return 'promtool not found in PATH: run tools/install-deps.sh (Debian package `prometheus`)';
    return `promtool ${args.join(' ')} exited ${e.status}:\n${e.stdout}${e.stderr}`;
  }
}

// Metric names defined in code: the string constants of common/metric_names.h.
function definedMetrics() {
  const text = fs.readFileSync(path.join(g.REPO, 'common', 'metric_names.h'), 'utf8');
  return new Set([...text.matchAll(/"(switchboard_[a-z0-9_]+)"/g)].map((m) => m[1]));
}

// A histogram's series names back to the histogram's name.
const family = (name) => name.replace(/_(bucket|count|sum)$/, '');

describe('dashboards', () => {
  it('are the three the operators need', () => {
    assert.deepEqual(dashboards.map((d) => d.file), ['broker-mesh.json', 'cluster-nodes.json', 'cluster-overview.json']);
    const uids = dashboards.map((d) => d.json.uid);
    assert.equal(new Set(uids).size, uids.length, `duplicate uids: ${uids}`);
  });

  it('type-check against @grafana/schema (Dashboard, RowPanel, each panel plugin\'s options, PrometheusDataQuery)', () => {
    assert.equal(schema.typeCheck(dashboards), '');
  });

  it('the type check rejects a broken dashboard (it is not vacuous)', () => {
    const broken = JSON.parse(JSON.stringify(dashboards[0].json));
    const panels = g.allPanels(broken).filter((p) => p.type === 'timeseries');
    panels[0].options.legend.displayMode = 'tabel'; // not an enum value
    panels[1].fieldConfig.defaults.unitt = 's'; // an unknown key
    delete panels[2].targets[0].refId; // a required key
    panels[3].gridPos.w = '12'; // a wrong type
    const out = schema.typeCheck([{ file: 'broken.json', json: broken }]);
    for (const needle of ['"tabel"', '"unitt"', "'refId'", "Type 'string' is not assignable to type 'number'"]) {
      assert.ok(out.includes(needle), `tsc did not report ${needle}:\n${out}`);
    }
  });

  for (const d of dashboards) {
    it(`${d.file}: ids, grid, datasource variable, template variables, node/shard/member filters`, () => {
      assert.deepEqual(schema.structure(d), []);
    });
  }

  it('read only metrics defined in common/metric_names.h', () => {
    const defined = definedMetrics();
    const unknown = [];
    for (const d of dashboards) {
      for (const t of g.panelTargets(d)) {
        for (const sel of g.selectors(t.expr)) {
          const name = g.metricName(sel);
          if (!defined.has(family(name))) unknown.push(`${d.file} panel ${t.panelId} "${t.panelTitle}" ${t.refId}: ${name}`);
        }
      }
      for (const v of g.variables(d.json)) {
        for (const sel of g.selectors(g.variableQuery(v).replace(/^label_values\((.*),\s*\w+\s*\)$/, '$1'))) {
          const name = g.metricName(sel);
          if (v.type === 'query' && !defined.has(family(name))) unknown.push(`${d.file} variable ${v.name}: ${name}`);
        }
      }
    }
    assert.deepEqual(unknown, []);
  });
});

describe('prometheus', () => {
  it('alerts.yml: the alerts of the issue, each with a severity, summary and description', () => {
    const names = rules.map((r) => r.name);
    for (const n of ['SwitchboardRestartStorm', 'SwitchboardSupervisorNearIntensity', 'SwitchboardQueueGrowing',
      'SwitchboardSlowConsumerSpike', 'SwitchboardShardDown', 'SwitchboardBrokerEpochChanged',
      'SwitchboardHistoryRecoveryFailures', 'SwitchboardPeerDown', 'SwitchboardPeerQueueGrowing',
      'SwitchboardPeerCreditLow', 'SwitchboardPeerOutboxDropping']) {
      assert.ok(names.includes(n), `no alert ${n}`);
    }
    const doc = g.loadYaml(path.join(g.PROMETHEUS_DIR, 'alerts.yml'));
    for (const r of doc.groups.flatMap((gr) => gr.rules)) {
      assert.ok(r.labels && r.labels.severity, `${r.alert}: no severity`);
      assert.ok(r.annotations && r.annotations.summary && r.annotations.description, `${r.alert}: summary and description`);
    }
  });

  it('alerts.yml reads only metrics defined in common/metric_names.h (and up)', () => {
    const defined = definedMetrics();
    const unknown = [];
    for (const r of rules) {
      for (const sel of g.selectors(r.expr)) {
        const name = g.metricName(sel);
        if (name !== 'up' && !defined.has(family(name))) unknown.push(`${r.name}: ${name}`);
      }
    }
    assert.deepEqual(unknown, []);
  });

  it('promtool check rules alerts.yml', () => {
    assert.equal(promtool(['check', 'rules', 'alerts.yml'], g.PROMETHEUS_DIR), '');
  });

  it('promtool check config prometheus.yml', () => {
    // Run from prometheus/, as an operator would: rule_files resolve next to the file.
    assert.equal(promtool(['check', 'config', 'prometheus.yml'], g.PROMETHEUS_DIR), '');
  });

  it('promtool test rules: each alert fires on its pattern and not on its near miss', () => {
    assert.equal(promtool(['test', 'rules', 'alerts.test.yml'], __dirname), '');
  });
});

describe('provisioning', () => {
  it('dashboards.yml is a file provider; datasources.yml a Prometheus data source', () => {
    const dir = path.join(g.DASHBOARDS_DIR, 'provisioning');
    const dash = g.loadYaml(path.join(dir, 'dashboards.yml'));
    assert.equal(dash.apiVersion, 1);
    assert.equal(dash.providers.length, 1);
    assert.equal(dash.providers[0].type, 'file');
    assert.ok(dash.providers[0].options && dash.providers[0].options.path, 'provider path');
    const ds = g.loadYaml(path.join(dir, 'datasources.yml'));
    assert.equal(ds.apiVersion, 1);
    assert.equal(ds.datasources[0].type, 'prometheus');
  });
});

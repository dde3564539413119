'use strict';
// The short chaos run (bench/history_chaos.js runs it for 10 minutes):
// 30 phoenix.js clients on three shards publish on a history topic while
// shards and the broker are killed (kill -9) or frozen (SIGSTOP) at random
// every 2–5 s. For every client, per epoch, the offsets it learns are
// gapless and duplicate-free, every broadcast acked to any sender is in
// every client's log, and no rejoin is answered recovered:false.

const assert = require('node:assert/strict');
const { it } = require('./lib/cluster');
const { runChaos } = require('./lib/history_chaos');
const { scopeFor } = require('./lib/util');

it('history survives kill -9 and SIGSTOP of shards and the broker: 0 missed, 0 duplicated', { timeout: 180000 }, async (t) => {
  const s = scopeFor(t);
  const seconds = Number(process.env.SWITCHBOARD_CHAOS_SECONDS || 20);
  const r = await runChaos(s, { seconds, log: (line) => t.diagnostic(line) });
  t.diagnostic(JSON.stringify({ ...r, missed: r.missed.length, duplicates: r.duplicates.length, problems: r.problems.length }));
  // An event every 2–5 s, each taking up to a second more (a stop) or a
  // restart: at least one per 7 s of the run, whatever the seed draws.
  assert.ok(r.events.length >= Math.floor(seconds / 7), `chaos events: ${JSON.stringify(r.events)}`);
  assert.ok(r.acked > 100, `acked ${r.acked}`);
  assert.deepEqual(r.problems.slice(0, 20), [], `seed ${r.seed}`);
  assert.deepEqual(r.missed.slice(0, 20), [], `seed ${r.seed}`);
  assert.deepEqual(r.duplicates.slice(0, 20), [], `seed ${r.seed}`);
  assert.equal(r.notRecovered, 0, `seed ${r.seed}`);
  assert.equal(r.epochs, 1, `seed ${r.seed}`);
});

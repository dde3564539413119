'use strict';
// bench/history_chaos.js: the long run of the history chaos test — 30
// phoenix.js clients (10 on each of three shards) publishing on a history
// topic while shards and the broker are killed (kill -9, 70 %) or frozen
// (SIGSTOP for 1 s, 30 %) at random every 2–5 s (tests/node/lib/
// history_chaos.js). Prints the chaos events, then what was acked and
// delivered, the rejoins and how many were answered recovered:false, and
// every gap, duplicate or missed acked broadcast (the first 20 of each).
// Exits 1 unless all of those are 0; 2 on a usage error.
//
//   SWITCHBOARD_BIN_DIR=build/bin node bench/history_chaos.js [--seconds 600] [--seed N]

const path = require('node:path');

const nodeDir = path.join(__dirname, '..', 'tests', 'node');
const { runChaos } = require(path.join(nodeDir, 'lib', 'history_chaos'));
const { Scope, positiveArg } = require(path.join(nodeDir, 'lib', 'util'));


(async () => {
  const seconds = positiveArg('--seconds', 600);
  const seed = positiveArg('--seed', Date.now() % 4294967296, { integer: true });
  const scope = new Scope();
  let r;
  try {
    r = await runChaos(scope, { seconds, seed, log: (l) => console.log(l) });
  } finally {
    await scope.close();
  }
  const bad = r.missed.length + r.duplicates.length + r.problems.length + r.notRecovered;
  console.log(JSON.stringify({
    seconds, seed: r.seed, chaos_events: r.events.length,
    kills: r.events.filter((e) => e.how === 'kill').length,
    stops: r.events.filter((e) => e.how === 'stop').length,
    acked: r.acked, top_offset: r.top, epochs: r.epochs, deliveries: r.deliveries,
    failed_pushes: r.failedPushes, rejoins: r.rejoins, recovered_false: r.notRecovered,
    missed: r.missed.length, duplicates: r.duplicates.length, gaps_or_disorder: r.problems.length,
  }));
  for (const list of [r.missed, r.duplicates, r.problems]) for (const x of list.slice(0, 20)) console.log(x);
  process.exit(bad === 0 && r.epochs === 1 ? 0 : 1);
})().catch((e) => {
  console.error(e);
  process.exit(1);
});

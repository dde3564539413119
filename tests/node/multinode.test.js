'use strict';
// config/multi-node as an operator runs it: the three node files, keys
// made by their make-keys script, each a `switchboard run` on 127.0.0.1
// with the files' own ports (only the paths under /tmp/switchboard/multi
// are moved into a temporary folder). The brokers link through the
// `cluster:` sections alone; `switchboard status` shows every member up;
// phoenix.js clients on the three nodes see one another's presence and
// broadcasts; a reload that changes a node's `cluster:` restarts its
// broker only.

const { describe } = require('node:test');
const assert = require('node:assert/strict');
const { execFile, execFileSync, spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { it, findNode: findChild } = require('./lib/cluster');
const { connect, join, push, Presence } = require('./lib/phoenix');
const { scopeFor, waitUntil, withTimeout } = require('./lib/util');

const SOURCE = path.resolve(__dirname, '../../config/multi-node');
const NODES = ['node1', 'node2', 'node3'];
const GATEWAY = { node1: 4101, node2: 4102, node3: 4103 };

const bin = (name) => path.join(process.env.SWITCHBOARD_BIN_DIR, name);

function sb(...args) {
  return new Promise((resolve) => {
    execFile(bin('switchboard'), args, { timeout: 10000 }, (err, stdout, stderr) =>
      resolve({ code: err ? err.code : 0, stdout, stderr }));
  });
}

// The files copied into `dir`, their paths moved there, keys made.
function prepare(dir) {
  for (const n of NODES) {
    const text = fs.readFileSync(path.join(SOURCE, `${n}.yaml`), 'utf8');
    fs.writeFileSync(path.join(dir, `${n}.yaml`), text.replaceAll('/tmp/switchboard/multi', path.join(dir, 'run')));
  }
  const out = execFileSync(path.join(SOURCE, 'make-keys'), [dir], {
    encoding: 'utf8', env: { ...process.env, SWITCHBOARD: bin('switchboard') },
  });
  return Object.fromEntries(out.trim().split('\n').map((l) => l.split(' ')));
}

function run(s, file) {
  const proc = spawn(bin('switchboard'), ['run', file], { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines = [];
  for (const stream of [proc.stdout, proc.stderr]) {
    stream.setEncoding('utf8');
    stream.on('data', (chunk) => lines.push(...chunk.split('\n').filter(Boolean)));
  }
  const exit = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  s.add(async () => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
    const r = await withTimeout(exit, 30000, `switchboard run ${file} to exit`);
    assert.equal(r.code, 0, `switchboard run ${file} exited ${JSON.stringify(r)}\n${lines.slice(-50).join('\n')}`);
  });
  return { proc, lines, file };
}

async function statusJson(file) {
  const r = await sb('status', '--json', '--config', file);
  if (r.code !== 0) throw new Error(`switchboard status: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

// Every member of every node's cluster up, as `switchboard status` says.
async function allUp(files, timeout = 20000) {
  for (const file of files) {
    await waitUntil(async () => {
      try {
        const st = await statusJson(file);
        return st.cluster.members.length === 2 && st.cluster.members.every((m) => m.up === true);
      } catch {
        return false;
      }
    }, { timeout, interval: 100, what: `${file}: every member up in switchboard status` });
  }
}

async function client(s, node, key) {
  const socket = await connect(s, `ws://127.0.0.1:${GATEWAY[node]}/socket`);
  const channel = socket.channel('room:lobby', { presence: { key, meta: { node } } });
  const got = [];
  channel.on('msg', (p) => got.push(p));
  const presence = new Presence(channel);
  const r = await join(channel);
  assert.equal(r.status, 'ok', `join of ${key}: ${JSON.stringify(r)}`);
  return { key, channel, got, presence, keys: () => presence.list((k) => k).sort() };
}

describe('config/multi-node: three node files, one cluster', () => {
  it('load as committed, link with made keys, show in status, carry broadcasts and presence', { timeout: 120000 }, async (t) => {
    const s = scopeFor(t);
    // As committed: valid files (the keys in them are placeholders until make-keys).
    for (const n of NODES) {
      const r = await sb('check', path.join(SOURCE, `${n}.yaml`));
      assert.equal(r.code, 0, `switchboard check ${n}.yaml: ${r.stdout}${r.stderr}`);
    }
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sb-multi-'));
    s.add(() => fs.rmSync(dir, { recursive: true, force: true }));
    const keys = prepare(dir);
    assert.deepEqual(Object.keys(keys), NODES);
    // make-keys put node1's new public key into the other two files.
    for (const n of ['node2', 'node3']) {
      assert.ok(fs.readFileSync(path.join(dir, `${n}.yaml`), 'utf8').includes(`curve_public: "${keys.node1}"`));
    }
    const files = NODES.map((n) => path.join(dir, `${n}.yaml`));
    const nodes = files.map((f) => run(s, f));
    await allUp(files);

    // The human status: the cluster's lines after the tree.
    const text = (await sb('status', '--config', files[0])).stdout;
    assert.match(text, /^cluster multi, node node1 \(membership static, peer socket tcp:\/\/127\.0\.0\.1:7101\)$/m, text);
    assert.match(text, /^ {2}node2 +up +[0-9.]+ ms +0$/m, text);
    assert.match(text, /^ {2}node3 +up +[0-9.]+ ms +0$/m, text);

    const a = await client(s, 'node1', 'a');
    const b = await client(s, 'node2', 'b');
    const c = await client(s, 'node3', 'c');
    for (const x of [a, b, c]) {
      await waitUntil(() => JSON.stringify(x.keys()) === '["a","b","c"]',
        { timeout: 10000, what: `${x.key} to see a, b and c present (sees ${JSON.stringify(x.keys())})` });
    }
    for (const [sender, n] of [[a, 1], [b, 2], [c, 3]]) {
      const r = await push(sender.channel, 'msg', { from: sender.key, n });
      assert.equal(r.status, 'ok', JSON.stringify(r));
    }
    for (const x of [a, b, c]) {
      await waitUntil(() => x.got.length >= 2, { timeout: 10000, what: `${x.key} to get the other two broadcasts` });
    }
    assert.deepEqual(a.got.map((p) => p.from).sort(), ['b', 'c']);
    assert.deepEqual(b.got.map((p) => p.from).sort(), ['a', 'c']);
    assert.deepEqual(c.got.map((p) => p.from).sort(), ['a', 'b']);

    // A reload that changes cluster: (the cluster's name on every node,
    // so the links come back) restarts each broker and nothing else.
    const before = await statusJson(files[2]);
    const shardPids = ['shard.0', 'shard.1'].map((id) => findChild(before.tree, id).pid);
    for (const f of files) {
      fs.writeFileSync(f, fs.readFileSync(f, 'utf8').replace('  name: multi\n', '  name: multi2\n'));
      const r = await sb('reload', '--config', f);
      assert.equal(r.code, 0, `reload ${f}: ${r.stdout}${r.stderr}`);
      assert.match(r.stdout, /broker/, r.stdout);
      assert.doesNotMatch(r.stdout, /shard/, r.stdout);
    }
    const after = await statusJson(files[2]);
    assert.equal(after.cluster.name, 'multi2');
    assert.notEqual(findChild(after.tree, 'broker').pid, findChild(before.tree, 'broker').pid);
    assert.deepEqual(['shard.0', 'shard.1'].map((id) => findChild(after.tree, id).pid), shardPids);
    await allUp(files);
    assert.ok(nodes.every((n) => n.proc.exitCode === null));
  });
});

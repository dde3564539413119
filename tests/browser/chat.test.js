'use strict';
// The chat page (examples/chat) in a real browser against a real node: a
// broker and two shards under `switchboard run` (tests/node/lib/cluster.js),
// each serving the assembled page with --static. Headless Chromium (Debian's
// `chromium`) is driven by puppeteer-core. Page A is loaded from shard 0 and
// page B from shard 1; they join one room, see each other online and chat
// both ways. Then shard 0 is killed with SIGKILL: page A must show
// "reconnecting", come back "online" by itself, see B again and chat again.
// A screenshot of page A is saved as chat.png in $SWITCHBOARD_TEST_OUTPUT_DIR.
//
// Environment (ctest sets it): SWITCHBOARD_BIN_DIR (the built binaries),
// SWITCHBOARD_CHAT_DIR (the assembled page, <build>/share/chat),
// SWITCHBOARD_TEST_OUTPUT_DIR; CHROMIUM overrides /usr/bin/chromium.

const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const puppeteer = require('puppeteer-core');
const { startCluster, it } = require('../node/lib/cluster');

const WAIT_MS = 15000;
// waitForFunction re-checks on an interval, not on animation frames
// (puppeteer's default): a page that is not in front gets no frames, so a
// condition met on the other page would never be seen.
const POLL_MS = 50;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

function env(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set (ctest sets it; see tests/browser/CMakeLists.txt)`);
  return v;
}

// A page of the browser, loaded from `origin`, that records what could go
// wrong unseen: uncaught exceptions, and requests that failed or went
// anywhere but the shard (the page must need no network).
async function openPage(browser, origin, label) {
  const page = await browser.newPage();
  await page.setViewport({ width: 760, height: 420 });
  const problems = [];
  page.on('pageerror', (e) => problems.push(`${label}: uncaught ${e.message}`));
  page.on('request', (r) => {
    const url = r.url();
    if (!url.startsWith(`${origin}/`) && !url.startsWith(origin.replace(/^http/, 'ws'))) {
      problems.push(`${label}: request to another origin: ${url}`);
    }
  });
  page.on('requestfailed', (r) => {
    // The WebSocket to a killed shard fails by design; a file must not.
    if (r.resourceType() !== 'websocket') problems.push(`${label}: ${r.url()} failed: ${r.failure()?.errorText}`);
  });
  const res = await page.goto(`${origin}/`, { waitUntil: 'load', timeout: WAIT_MS });
  assert.equal(res.status(), 200, `${label}: GET / from the shard`);
  return { page, problems, label };
}

// Keys go to the page in front only: a page in the background would wait.
async function joinRoom({ page }, name, room) {
  await page.bringToFront();
  await page.type('#name', name);
  await page.$eval('#room', (el, r) => { el.value = r; }, room);
  await page.click('#join');
}

function connection({ page }) {
  return page.$eval('#connection', (el) => el.dataset.state);
}

async function waitConnection(p, state) {
  await p.page
    .waitForFunction((s) => document.querySelector('#connection').dataset.state === s, { timeout: WAIT_MS, polling: POLL_MS }, state)
    .catch(async (e) => {
      throw new Error(`${p.label}: connection state "${await connection(p)}", waited for "${state}": ${e.message}`);
    });
}

function online({ page }) {
  return page.$$eval('#online li', (lis) => lis.map((li) => li.textContent));
}

async function waitOnline(p, names) {
  await p.page
    .waitForFunction(
      (want) => {
        const have = [...document.querySelectorAll('#online li')].map((li) => li.textContent);
        return JSON.stringify(have) === JSON.stringify(want);
      },
      { timeout: WAIT_MS, polling: POLL_MS },
      names,
    )
    .catch(async (e) => {
      throw new Error(`${p.label}: online ${JSON.stringify(await online(p))}, waited for ${JSON.stringify(names)}: ${e.message}`);
    });
}

async function say(p, text) {
  await p.page.bringToFront();
  await p.page.type('#message', text);
  await p.page.keyboard.press('Enter');
}

function messages({ page }) {
  return page.$$eval('#messages li', (lis) => lis.map((li) => li.textContent));
}

async function waitMessage(p, line) {
  await p.page
    .waitForFunction(
      (want) => [...document.querySelectorAll('#messages li')].some((li) => li.textContent === want),
      { timeout: WAIT_MS, polling: POLL_MS },
      line,
    )
    .catch(async (e) => {
      throw new Error(`${p.label}: messages ${JSON.stringify(await messages(p))}, waited for "${line}": ${e.message}`);
    });
}

// Every connection state page `p` shows from now on, in order (a change
// can be too brief for a poll to see).
async function recordStates({ page }) {
  await page.evaluate(() => {
    const el = document.querySelector('#connection');
    window.connectionStates = [el.dataset.state];
    new MutationObserver(() => window.connectionStates.push(el.dataset.state))
      .observe(el, { attributes: true, attributeFilter: ['data-state'] });
  });
}

it('two pages on two shards chat, and a page whose shard is killed reconnects by itself', { timeout: 120000 }, async () => {
  const chatDir = env('SWITCHBOARD_CHAT_DIR');
  const outDir = env('SWITCHBOARD_TEST_OUTPUT_DIR');
  assert.ok(fs.existsSync(path.join(chatDir, 'phoenix.mjs')), `${chatDir}/phoenix.mjs: build the chat_page target`);
  // The rooms keep history, as in config/cluster.yaml: a page that
  // reconnects recovers what was said meanwhile.
  const history = ['--history', 'room:*=1000/10m'];
  const args = ['--static', chatDir, ...history];
  const cluster = await startCluster({ shards: [{ args }, { args }], brokerArgs: history, name: 'browser' });
  let browser = null;
  try {
    browser = await puppeteer.launch({
      executablePath: CHROMIUM,
      headless: true,
      // CI runs as root, where Chromium's sandbox cannot start.
      args: [...(process.getuid() === 0 ? ['--no-sandbox'] : []), '--disable-dev-shm-usage', '--disable-gpu'],
      // Chromium's own start, on a loaded machine, takes longer than a
      // page's wait.
      timeout: 4 * WAIT_MS,
    });
    const [s0, s1] = cluster.shards;
    const a = await openPage(browser, `http://127.0.0.1:${s0.port}`, 'page A (shard 0)');
    const b = await openPage(browser, `http://127.0.0.1:${s1.port}`, 'page B (shard 1)');
    assert.equal(await connection(a), 'offline');
    assert.equal(await a.page.$eval('#chat', (el) => el.checkVisibility()), false, 'no chat before joining');

    await joinRoom(a, 'alice', 'lobby');
    await joinRoom(b, 'bob', 'lobby');
    await waitConnection(a, 'online');
    await waitConnection(b, 'online');
    for (const p of [a, b]) {
      assert.deepEqual(await p.page.$eval('#join-form', (el) => el.checkVisibility()), false, `${p.label}: join form hidden`);
      assert.deepEqual(await p.page.$eval('#chat', (el) => el.checkVisibility()), true, `${p.label}: chat shown`);
    }
    await waitOnline(a, ['alice (you)', 'bob']);
    await waitOnline(b, ['alice', 'bob (you)']);

    await say(a, 'hello from shard 0');
    await waitMessage(b, 'alicehello from shard 0');
    await say(b, 'hello from shard 1');
    await waitMessage(a, 'bobhello from shard 1');
    await waitMessage(a, 'alicehello from shard 0'); // its own line, shown once sent

    // In front: phoenix.js (1.8) does not reconnect a hidden page until it
    // is shown again, and of two tabs only the front one is visible.
    await a.page.bringToFront();
    await recordStates(a);
    const oldPid = await cluster.kill('shard-0');
    // Said while page A's shard is down (or just back): page A gets it once,
    // recovered on its rejoin or live after it.
    await say(b, 'said while you were away');
    await a.page.bringToFront();
    await cluster.waitRestarted('shard-0', oldPid, { timeout: WAIT_MS, polling: POLL_MS });
    await a.page
      .waitForFunction(() => {
        const s = window.connectionStates;
        return s.includes('reconnecting') && s.indexOf('online', s.indexOf('reconnecting')) > 0;
      }, { timeout: WAIT_MS, polling: POLL_MS })
      .catch(async (e) => {
        const states = await a.page.evaluate(() => window.connectionStates);
        throw new Error(`page A's states since the kill: ${JSON.stringify(states)}: ${e.message}`);
      });
    await waitConnection(a, 'online');
    // The new shard-0 process holds page A's socket.
    await cluster.waitForMetric(s0, 'switchboard_worker_connections', {}, (v) => v === 1, { timeout: WAIT_MS, polling: POLL_MS });
    await waitMessage(a, 'bobsaid while you were away');
    const lines = await messages(a);
    assert.equal(lines.filter((l) => l === 'bobsaid while you were away').length, 1, JSON.stringify(lines));
    assert.ok(lines.some((l) => /^reconnected: recovered [01] messages$/.test(l)), JSON.stringify(lines));
    await waitOnline(a, ['alice (you)', 'bob']);
    await waitOnline(b, ['alice', 'bob (you)']);
    assert.equal(await connection(b), 'online', 'page B never lost its shard');

    await say(a, 'back after the restart');
    await waitMessage(b, 'aliceback after the restart');
    await say(b, 'welcome back');
    await waitMessage(a, 'bobwelcome back');

    fs.mkdirSync(outDir, { recursive: true });
    await a.page.screenshot({ path: path.join(outDir, 'chat.png') });
    assert.deepEqual([...a.problems, ...b.problems], []);
  } finally {
    if (browser) await browser.close().catch(() => browser.process()?.kill('SIGKILL'));
    await cluster.stop();
  }
});

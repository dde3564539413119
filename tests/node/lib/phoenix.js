'use strict';
// The npm phoenix client over `ws`, with promise helpers. Node has no global
// WebSocket (or one phoenix.js should not pick), so every socket gets
// `transport: WebSocket` from `ws` and an absolute URL.

const { Socket, Presence } = require('phoenix');
const WebSocket = require('ws');
const { Inbox, withTimeout, DEFAULT_TIMEOUT_MS } = require('./util');

// A phoenix Socket on `url` (not connected yet). Its close events (code,
// reason) are recorded in `socket.closes`, its opens counted in `socket.opens`.
function makeSocket(url, opts = {}) {
  const socket = new Socket(url, { transport: WebSocket, ...opts });
  socket.closes = new Inbox();
  socket.openCount = 0;
  socket.opens = new Inbox();
  socket.errors = new Inbox();
  socket.onOpen(() => {
    socket.openCount += 1;
    socket.opens.push(socket.openCount);
  });
  socket.onClose((e) => socket.closes.push({ code: e && e.code, reason: e && e.reason }));
  socket.onError((e) => socket.errors.push(e));
  return socket;
}

// Disconnects and resolves once phoenix.js has finished its teardown.
function disconnect(socket) {
  return withTimeout(new Promise((resolve) => socket.disconnect(() => resolve())), 5000,
    'phoenix socket teardown');
}

// A connected phoenix Socket; disconnected when `scope` closes.
async function connect(scope, url, opts = {}) {
  const socket = makeSocket(url, opts);
  scope.add(() => disconnect(socket));
  const opened = socket.opens.take(() => true, { what: `phoenix socket to open ${url}` });
  socket.connect();
  await opened;
  return socket;
}

// Resolves with {status, response} for the first of ok / error / timeout on
// a Push (a join or a channel push).
function outcome(push, { timeout = DEFAULT_TIMEOUT_MS + 2000, what = 'a reply' } = {}) {
  return withTimeout(new Promise((resolve) => {
    push
      .receive('ok', (response) => resolve({ status: 'ok', response }))
      .receive('error', (response) => resolve({ status: 'error', response }))
      .receive('timeout', () => resolve({ status: 'timeout' }));
  }), timeout, what);
}

function join(channel, opts = {}) {
  return outcome(channel.join(), { what: `the join reply for ${channel.topic}`, ...opts });
}

function push(channel, event, payload, opts = {}) {
  return outcome(channel.push(event, payload), { what: `the reply to ${event} on ${channel.topic}`, ...opts });
}

// Records `events` of a channel as {event, payload, ref, joinRef} in an Inbox.
function record(channel, events) {
  const inbox = new Inbox();
  for (const event of events) {
    channel.on(event, (payload, ref, joinRef) => inbox.push({ event, payload, ref, joinRef }));
  }
  return inbox;
}

// The next recorded `event` (optionally also matching `pred(payload)`).
function next(inbox, event, pred = () => true, opts = {}) {
  return inbox.take((m) => m.event === event && pred(m.payload), { what: `event ${event}`, ...opts });
}

// A client given several nodes' URLs, as docs/CLUSTER.md says to run one
// against a cluster: phoenix.js takes one URL, so when the socket closes
// (its node gone) this ends that Socket (and its own reconnect timer) and
// makes a new one on the next URL of the list, where it joins `topic` again
// with `params(url)`. `setup(channel)` is called on every channel made, to
// bind its handlers. `socket`, `channel` and `url` are the current ones;
// `joins` gets {url} for every join answered ok.
class FailoverClient {
  constructor(scope, urls, topic, params, setup) {
    Object.assign(this, { urls, topic, params, setup });
    this.joins = new Inbox();
    this.closed = false;
    this.moveDelayMs = 100; // between tries when a whole round of URLs fails
    scope.add(() => {
      this.closed = true;
      return disconnect(this.socket);
    });
  }

  // Connects to the first URL; resolves once joined there.
  async start() {
    const joined = this.joins.take(() => true, { what: `the join on ${this.urls[0]}` });
    this.open(0);
    return joined;
  }

  open(i) {
    const url = this.urls[i];
    const socket = makeSocket(url);
    const channel = socket.channel(this.topic, this.params(url));
    Object.assign(this, { socket, channel, url });
    this.setup(channel);
    let moved = false;
    socket.onClose(() => {
      if (moved || this.closed) return;
      moved = true;
      socket.disconnect();
      const next = (i + 1) % this.urls.length;
      setTimeout(() => this.closed || this.open(next), next === 0 ? this.moveDelayMs : 0);
    });
    socket.connect();
    channel.join().receive('ok', () => this.joins.push({ url }));
  }
}

module.exports = { FailoverClient, Socket, Presence, WebSocket, makeSocket, connect, disconnect, outcome, join, push, record, next };

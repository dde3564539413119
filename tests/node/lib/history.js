'use strict';
// A phoenix.js client of a topic that keeps history, written as an app
// would: it remembers the last position it saw ({epoch, offset}) and gives
// it back on every (re)join through the channel's params closure, so that
// a rejoin recovers what it missed. Every offset it learns — a delivery's
// ref slot, its own push's ok, a recovered message — is checked against the
// last: per epoch they must go up by exactly one.

const { join, outcome } = require('./phoenix');
const { withTimeout, delay } = require('./util');

class HistoryClient {
  // `params`: more join params (a presence to track), sent on every join.
  constructor(socket, topic, { event = 'msg', name = '', params = {} } = {}) {
    this.socket = socket;
    this.topic = topic;
    this.event = event;
    this.name = name;
    this.pos = null; // {epoch, offset} last seen
    this.received = []; // {epoch, offset, payload, how}: every message in the order learnt
    this.problems = []; // gaps, duplicates, bad refs
    this.joinReplies = [];
    this.acked = []; // {epoch, offset, payload}: own pushes answered ok
    this.channel = socket.channel(topic, () => (this.pos ? { ...params, recover: this.pos } : params));
    this.channel.on(event, (payload, ref) => this.learn(ref, payload, 'delivery'));
  }

  learn(ref, payload, how) {
    const offset = Number(ref);
    if (typeof ref !== 'string' || !Number.isInteger(offset) || offset <= 0) {
      this.problems.push(`${this.name}: ${how} with ref ${JSON.stringify(ref)}`);
      return;
    }
    if (!this.pos) {
      this.problems.push(`${this.name}: ${how} ${offset} before any join answer`);
      return;
    }
    if (offset !== this.pos.offset + 1) {
      this.problems.push(`${this.name}: ${how} ${offset} after ${this.pos.offset} (epoch ${this.pos.epoch})`);
    }
    if (offset > this.pos.offset) this.pos = { epoch: this.pos.epoch, offset };
    this.received.push({ epoch: this.pos.epoch, offset, payload, how });
  }

  onJoinReply(r) {
    this.joinReplies.push(r);
    const { epoch, offset, recovered } = r;
    if (typeof epoch !== 'string' || !/^[0-9a-f]{16}$/.test(epoch) || !Number.isInteger(offset)) {
      this.problems.push(`${this.name}: join reply ${JSON.stringify(r)}`);
      return;
    }
    if (this.pos && recovered) {
      if (epoch !== this.pos.epoch) this.problems.push(`${this.name}: recovered across epochs`);
      // The recovered messages follow the reply: offsets pos+1..offset.
      this.expectUpTo = offset;
    } else {
      // A first join, or recovered:false: the app reloads, from here on.
      this.pos = { epoch, offset };
    }
  }

  // Joins (the first time); every rejoin phoenix.js makes goes through the
  // same push and so through onJoinReply.
  async join() {
    const p = this.channel.join();
    p.receive('ok', (r) => this.onJoinReply(r));
    const r = await outcome(p, { what: `the join of ${this.topic} by ${this.name}` });
    return r;
  }

  // Pushes {n}; its ok's offset is learnt like a delivery, in order.
  async push(payload, { timeout = 10000 } = {}) {
    const p = this.channel.push(this.event, payload, timeout);
    // Learnt as the reply is handled, not after an await: `ws` emits every
    // message of one read at once, so a later delivery would come first.
    p.receive('ok', (response) => {
      this.learn(String(response.offset), payload, 'ok');
      this.acked.push({ epoch: response.epoch, offset: response.offset, payload });
    });
    return outcome(p, { timeout: timeout + 2000, what: `the reply to a push by ${this.name}` });
  }

  // Waits until `pred(this)` holds.
  async until(pred, what, timeout = 10000) {
    return withTimeout((async () => {
      while (!pred(this)) await delay(20);
    })(), timeout, `${what} at ${this.name} (pos ${JSON.stringify(this.pos)})`);
  }

  offsets(epoch) {
    return this.received.filter((m) => m.epoch === epoch).map((m) => m.offset);
  }
}

module.exports = { HistoryClient, join };

'use strict';
// A TCP relay that holds every byte for a fixed delay in each direction:
// the 20 ms between nodes that this kernel cannot add with netem. Each
// accepted connection gets its own connection to the target; what one side
// sends reaches the other `delayMs` later, in order (a chunk is written
// when its time comes, never before an earlier chunk). A brokers' link made
// through it sees an RTT of 2 x delayMs more than without it.
//
// Backpressure: a side that cannot take more pauses reading from the
// other, so a slow reader bounds what the relay holds.

const net = require('node:net');

class DelayRelay {
  constructor({ listenHost = '127.0.0.1', listenPort = 0, targetHost, targetPort, delayMs }) {
    this.opts = { listenHost, listenPort, targetHost, targetPort, delayMs };
    this.server = null;
    this.pairs = new Set();
    this.connections = 0; // accepted so far
  }

  // Listens; resolves with the port it listens on.
  start() {
    return new Promise((resolve, reject) => {
      this.server = net.createServer((down) => this.accept(down));
      this.server.once('error', reject);
      this.server.listen(this.opts.listenPort, this.opts.listenHost, () => {
        this.server.off('error', reject);
        this.port = this.server.address().port;
        resolve(this.port);
      });
    });
  }

  accept(down) {
    this.connections++;
    const up = net.connect(this.opts.targetPort, this.opts.targetHost);
    const pair = { down, up, timers: new Set() };
    this.pairs.add(pair);
    for (const s of [down, up]) s.setNoDelay(true);
    this.pipe(pair, down, up);
    this.pipe(pair, up, down);
    const close = () => this.closePair(pair);
    for (const s of [down, up]) {
      s.on('error', close);
      s.on('close', close);
    }
  }

  // Bytes read from `from` are written to `to` delayMs later, in order.
  pipe(pair, from, to) {
    const queue = [];
    let timer = null;
    const flush = () => {
      pair.timers.delete(timer);
      timer = null;
      const now = Date.now();
      while (queue.length > 0 && queue[0].due <= now) {
        const { chunk } = queue.shift();
        if (!to.destroyed && !to.write(chunk)) {
          from.pause();
          to.once('drain', () => from.resume());
        }
      }
      arm();
    };
    const arm = () => {
      if (timer !== null || queue.length === 0) return;
      timer = setTimeout(flush, Math.max(0, queue[0].due - Date.now()));
      pair.timers.add(timer);
    };
    from.on('data', (chunk) => {
      queue.push({ chunk, due: Date.now() + this.opts.delayMs });
      arm();
    });
    from.on('end', () => {
      // The half-close follows the last chunk, delayed as the data is.
      const t = setTimeout(() => to.end(), Math.max(0, (queue.length ? queue[queue.length - 1].due : Date.now()) - Date.now() + 1));
      pair.timers.add(t);
    });
  }

  closePair(pair) {
    if (!this.pairs.delete(pair)) return;
    for (const t of pair.timers) clearTimeout(t);
    pair.down.destroy();
    pair.up.destroy();
  }

  // Closes the listener and every relayed connection.
  async stop() {
    for (const pair of [...this.pairs]) this.closePair(pair);
    if (this.server) await new Promise((resolve) => this.server.close(() => resolve()));
    this.server = null;
  }
}

async function startDelayRelay(opts) {
  const r = new DelayRelay(opts);
  await r.start();
  return r;
}

module.exports = { DelayRelay, startDelayRelay };

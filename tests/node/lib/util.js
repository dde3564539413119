'use strict';
// Small building blocks shared by the suite: bounded waits, a queue that
// tests take messages from, and a scope that closes what a test opened.

const DEFAULT_TIMEOUT_MS = 10000;

// Resolves or rejects like `promise`, or rejects after `ms` naming `what`.
function withTimeout(promise, ms, what) {
  let timer;
  const expiry = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, expiry]).finally(() => clearTimeout(timer));
}

// Polls `check` (sync or async) until it returns a truthy value, which is
// returned. Only for conditions no event announces (metrics, process state).
async function waitUntil(check, { timeout = DEFAULT_TIMEOUT_MS, interval = 50, what = 'a condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() >= deadline) {
      const detail = last instanceof Error ? ` (last error: ${last.message})` : '';
      throw new Error(`timed out after ${timeout} ms waiting for ${what}${detail}`);
    }
    await new Promise((r) => setTimeout(r, interval));
  }
}

function delay(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

// A queue of received items. `take(pred)` removes and returns the first
// queued item matching `pred`, or waits (bounded) for one to arrive. Items no
// waiter wants stay queued; `all` keeps everything ever received.
class Inbox {
  constructor() {
    this.items = [];
    this.all = [];
    this.waiters = [];
  }

  push(item) {
    this.all.push(item);
    const i = this.waiters.findIndex((w) => w.pred(item));
    if (i >= 0) {
      const [w] = this.waiters.splice(i, 1);
      w.resolve(item);
    } else {
      this.items.push(item);
    }
  }

  take(pred = () => true, { timeout = DEFAULT_TIMEOUT_MS, what = 'a message' } = {}) {
    const i = this.items.findIndex(pred);
    if (i >= 0) return Promise.resolve(this.items.splice(i, 1)[0]);
    let waiter;
    const p = new Promise((resolve) => {
      waiter = { pred, resolve };
      this.waiters.push(waiter);
    });
    return withTimeout(p, timeout, what).catch((e) => {
      const j = this.waiters.indexOf(waiter);
      if (j >= 0) this.waiters.splice(j, 1);
      throw e;
    });
  }

  // True if any item ever received matches.
  seen(pred) {
    return this.all.some(pred);
  }

  clear() {
    this.items = [];
    this.all = [];
  }
}

// Closes registered resources in reverse order when the test ends.
class Scope {
  constructor() {
    this.closers = [];
  }

  add(close) {
    this.closers.push(close);
  }

  async close() {
    let first = null;
    while (this.closers.length > 0) {
      const close = this.closers.pop();
      try {
        await close();
      } catch (e) {
        if (!first) first = e;
      }
    }
    if (first) throw first;
  }
}

// A scope closed by the test context `t` once the test is over.
function scopeFor(t) {
  const scope = new Scope();
  t.after(() => scope.close());
  return scope;
}

// The environment for a process whose memory a test bounds. Under
// AddressSanitizer (the sanitizer pass of tools/test) freed memory waits in
// a quarantine, 256 MiB by default, before it is reused: a flood of
// short-lived allocations would look like growth that is ASan's, not the
// shard's. Without a quarantine every access is still checked; only
// use-after-free of blocks already reused goes unseen in these tests.
// ...and what small heap blocks cost there, against glibc's: ASan puts a
// header and redzones around every block and keeps shadow memory for it;
// measured, a queue of pongs charged 1 MiB holds about 3.5 MiB under ASan.
// (tools/test sets ASAN_OPTIONS for its sanitizer pass only.)
const HEAP_FACTOR = process.env.ASAN_OPTIONS ? 4 : 1;
const BOUNDED_MEMORY_ENV = {
  ASAN_OPTIONS: [process.env.ASAN_OPTIONS, 'quarantine_size_mb=0'].filter(Boolean).join(':'),
};

// A bench program's `--name N` from process.argv: a positive number (an
// integer if `integer`), `dflt` when absent; exits 2 naming the flag if not.
function positiveArg(name, dflt, { integer = false } = {}) {
  const i = process.argv.indexOf(name);
  if (i < 0) return dflt;
  const v = Number(process.argv[i + 1]);
  if (!(integer ? Number.isInteger(v) : Number.isFinite(v)) || v <= 0) {
    console.error(`${name} needs a positive ${integer ? 'integer' : 'number'}`);
    process.exit(2);
  }
  return v;
}

// The nearest-rank `q` quantile (0 < q <= 1) of the numbers `xs`: the
// smallest of them with at least a fraction `q` of them at or below it.
function quantile(xs, q) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)];
}

module.exports = {
  positiveArg, quantile,
  DEFAULT_TIMEOUT_MS, withTimeout, waitUntil, delay, Inbox, Scope, scopeFor, BOUNDED_MEMORY_ENV, HEAP_FACTOR,
};

#!/usr/bin/env node
// A terminal chat client for one shard, built on the real phoenix client.
// Usage: node tools/chat.js NAME [--url ws://127.0.0.1:4000/socket] [--topic room:lobby]
// Needs the packages of tests/node (cd tests/node && npm ci).
"use strict";
const path = require("path");
const nodeModules = path.join(__dirname, "..", "tests", "node", "node_modules");
const { Socket, Presence } = require(path.join(nodeModules, "phoenix"));
const WebSocket = require(path.join(nodeModules, "ws"));

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? args.splice(i, 2)[1] : dflt;
};
const url = opt("--url", "ws://127.0.0.1:4000/socket");
const topic = opt("--topic", "room:lobby");
const name = args[0];
if (!name) {
  console.error("usage: node tools/chat.js NAME [--url URL] [--topic TOPIC]");
  process.exit(2);
}

const socket = new Socket(url, { transport: WebSocket });
socket.onError(() => console.error(`(cannot reach ${url}; retrying)`));
socket.connect();
// Where we are in the room's history ({epoch, offset}): every rejoin asks
// for what was said meanwhile (the params closure is re-evaluated each time).
let position = null;
let recovering = 0;
const channel = socket.channel(topic, () => ({
  presence: { key: name, meta: { since: Date.now() } },
  ...(position ? { recover: position } : {}),
}));
const seen = (ref) => {
  const offset = Number(ref);
  if (position && Number.isInteger(offset) && offset > position.offset) position.offset = offset;
};
const presence = new Presence(channel);
let online = "";
presence.onSync(() => {
  const names = presence.list((key) => key).sort().join(", ");
  if (names !== online) console.log(`(online: ${names})`);
  online = names;
});
channel.on("say", (msg, ref) => {
  seen(ref);
  console.log(`${msg.from}: ${msg.text}`);
  if (recovering > 0 && --recovering === 0) console.log("(caught up)");
});
let joined = false;
channel
  .join()
  // Runs on every rejoin (phoenix.js resends the same join).
  .receive("ok", (r = {}) => {
    if (joined && r.epoch !== undefined) {
      if (r.recovered && position) {
        recovering = r.offset - position.offset;
        console.log(`(reconnected: recovered ${recovering} messages)`);
      } else {
        console.log("(reconnected: what was said meanwhile is not in the room's history)");
      }
    } else {
      console.log(`(joined ${topic} as ${name}; type and press Enter)`);
    }
    if (r.epoch !== undefined && !(r.recovered && position)) position = { epoch: r.epoch, offset: r.offset };
    joined = true;
  })
  .receive("error", (e) => console.error("(join refused)", e));

process.stdin.setEncoding("utf8");
let pending = "";
process.stdin.on("data", (chunk) => {
  pending += chunk;
  let nl;
  while ((nl = pending.indexOf("\n")) >= 0) {
    const text = pending.slice(0, nl).trim();
    pending = pending.slice(nl + 1);
    if (text) channel.push("say", { from: name, text }).receive("ok", (r = {}) => seen(String(r.offset)));
  }
});
process.stdin.on("end", () => socket.disconnect(() => process.exit(0)));

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
const channel = socket.channel(topic, { presence: { key: name, meta: { since: Date.now() } } });
const presence = new Presence(channel);
let online = "";
presence.onSync(() => {
  const names = presence.list((key) => key).sort().join(", ");
  if (names !== online) console.log(`(online: ${names})`);
  online = names;
});
channel.on("say", (msg) => console.log(`${msg.from}: ${msg.text}`));
channel
  .join()
  .receive("ok", () => console.log(`(joined ${topic} as ${name}; type and press Enter)`))
  .receive("error", (e) => console.error("(join refused)", e));

process.stdin.setEncoding("utf8");
let pending = "";
process.stdin.on("data", (chunk) => {
  pending += chunk;
  let nl;
  while ((nl = pending.indexOf("\n")) >= 0) {
    const text = pending.slice(0, nl).trim();
    pending = pending.slice(nl + 1);
    if (text) channel.push("say", { from: name, text });
  }
});
process.stdin.on("end", () => socket.disconnect(() => process.exit(0)));

'use strict';
// A WebSocket client written against a plain TCP socket, for tests that must
// control every byte: the upgrade request, masking, fragmentation, invalid
// frames. It parses the server's frames, answers pings and the server's
// close, and reports the close code the server sent (1006 when the TCP
// connection ended without a close frame).

const crypto = require('node:crypto');
const net = require('node:net');
const WebSocket = require('ws');
const { Inbox, withTimeout, DEFAULT_TIMEOUT_MS } = require('./util');

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const OP = { cont: 0x0, text: 0x1, binary: 0x2, close: 0x8, ping: 0x9, pong: 0xa };

// One client → server frame. `mask: false` builds the unmasked frame a
// server must refuse; `rsv` sets RSV1-3 bits (0-7); `length` overrides the
// advertised payload length.
function buildFrame(opcode, payload = Buffer.alloc(0), { fin = true, mask = true, rsv = 0, length } = {}) {
  const data = Buffer.isBuffer(payload) ? payload : Buffer.from(payload);
  const len = length === undefined ? data.length : length;
  let header;
  if (len < 126) {
    header = Buffer.alloc(2);
    header[1] = len;
  } else if (len < 65536) {
    header = Buffer.alloc(4);
    header[1] = 126;
    header.writeUInt16BE(len, 2);
  } else {
    header = Buffer.alloc(10);
    header[1] = 127;
    header.writeBigUInt64BE(BigInt(len), 2);
  }
  header[0] = (fin ? 0x80 : 0) | ((rsv & 7) << 4) | (opcode & 0x0f);
  if (!mask) return Buffer.concat([header, data]);
  header[1] |= 0x80;
  const key = crypto.randomBytes(4);
  const masked = Buffer.alloc(data.length);
  for (let i = 0; i < data.length; i++) masked[i] = data[i] ^ key[i & 3];
  return Buffer.concat([header, key, masked]);
}

function closePayload(code, reason = '') {
  const b = Buffer.alloc(2 + Buffer.byteLength(reason));
  b.writeUInt16BE(code, 0);
  b.write(reason, 2);
  return b;
}

class RawClient {
  constructor(socket) {
    this.socket = socket;
    this.inbox = new Inbox();
    this.buf = Buffer.alloc(0);
    this.fragments = null; // {opcode, parts} of an unfinished server message
    this.refCounter = 0;
    this.closeFrame = null; // {code, reason} the server sent
    this.ended = false;
    this.listeners = [];
    // When true, messages go only to listeners, not to the inbox (floods).
    this.discard = false;
    this.writeErrors = [];
    this.closed = new Promise((resolve) => {
      socket.on('close', () => {
        this.ended = true;
        resolve(this.closeFrame || { code: 1006, reason: '', frame: false });
      });
    });
    socket.on('error', (e) => this.writeErrors.push(e));
    socket.on('data', (chunk) => this.onData(chunk));
  }

  // Performs the upgrade. Resolves with a client on 101; otherwise rejects
  // with an error carrying `status` (the HTTP status) and `headers`.
  // `localAddress`: the source address (any of 127.0.0.0/8 on loopback).
  static connect(port, { path = '/socket/websocket?vsn=2.0.0', headers = {}, timeout = DEFAULT_TIMEOUT_MS,
    localAddress } = {}) {
    const key = crypto.randomBytes(16).toString('base64');
    const lines = [
      `GET ${path} HTTP/1.1`,
      `Host: 127.0.0.1:${port}`,
      'Upgrade: websocket',
      'Connection: Upgrade',
      `Sec-WebSocket-Key: ${key}`,
      'Sec-WebSocket-Version: 13',
      ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
      '',
      '',
    ];
    const socket = net.connect({ host: '127.0.0.1', port, localAddress });
    socket.setNoDelay(true);
    const handshake = new Promise((resolve, reject) => {
      let head = Buffer.alloc(0);
      const onData = (chunk) => {
        head = Buffer.concat([head, chunk]);
        const end = head.indexOf('\r\n\r\n');
        if (end < 0) return;
        socket.off('data', onData);
        socket.off('error', onError);
        socket.off('end', onEnd);
        const text = head.slice(0, end).toString('latin1');
        const rest = head.slice(end + 4);
        const [statusLine, ...headerLines] = text.split('\r\n');
        const status = Number(statusLine.split(' ')[1]);
        const hdrs = {};
        for (const l of headerLines) {
          const i = l.indexOf(':');
          if (i > 0) hdrs[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
        }
        if (status !== 101) {
          socket.destroy();
          const err = new Error(`upgrade refused: ${statusLine}`);
          err.status = status;
          err.headers = hdrs;
          reject(err);
          return;
        }
        const accept = crypto.createHash('sha1').update(key + GUID).digest('base64');
        if (hdrs['sec-websocket-accept'] !== accept) {
          socket.destroy();
          reject(new Error(`bad Sec-WebSocket-Accept ${hdrs['sec-websocket-accept']}, expected ${accept}`));
          return;
        }
        const client = new RawClient(socket);
        client.headers = hdrs;
        if (rest.length > 0) client.onData(rest);
        resolve(client);
      };
      const onError = (e) => reject(e);
      const onEnd = () => reject(new Error('connection ended during the upgrade'));
      socket.on('data', onData);
      socket.on('error', onError);
      socket.on('end', onEnd);
      socket.on('connect', () => socket.write(lines.join('\r\n')));
    });
    return withTimeout(handshake, timeout, `the upgrade on port ${port}`).catch((e) => {
      socket.destroy();
      throw e;
    });
  }

  onData(chunk) {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    for (;;) {
      if (this.buf.length < 2) return;
      const b0 = this.buf[0];
      const b1 = this.buf[1];
      let len = b1 & 0x7f;
      let off = 2;
      if (len === 126) {
        if (this.buf.length < 4) return;
        len = this.buf.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (this.buf.length < 10) return;
        len = Number(this.buf.readBigUInt64BE(2));
        off = 10;
      }
      const masked = (b1 & 0x80) !== 0;
      if (masked) off += 4;
      if (this.buf.length < off + len) return;
      let payload = this.buf.slice(off, off + len);
      if (masked) {
        const key = this.buf.slice(off - 4, off);
        payload = Buffer.from(payload.map((x, i) => x ^ key[i & 3]));
      }
      this.buf = this.buf.slice(off + len);
      this.onFrame(b0 & 0x80, b0 & 0x0f, payload, { masked, rsv: (b0 >> 4) & 7 });
    }
  }

  onFrame(fin, opcode, payload, flags) {
    if (flags.masked || flags.rsv) this.inbox.push({ type: 'violation', flags });
    if (opcode === OP.close) {
      if (!this.closeFrame) {
        const code = payload.length >= 2 ? payload.readUInt16BE(0) : 1005;
        this.closeFrame = { code, reason: payload.slice(2).toString('utf8'), frame: true };
        this.write(buildFrame(OP.close, payload.slice(0, 2)));
      }
      return;
    }
    if (opcode === OP.ping) {
      this.write(buildFrame(OP.pong, payload));
      this.deliver({ type: 'ping', data: payload });
      return;
    }
    if (opcode === OP.pong) {
      this.deliver({ type: 'pong', data: payload });
      return;
    }
    if (opcode === OP.cont) {
      if (!this.fragments) return;
      this.fragments.parts.push(payload);
      if (!fin) return;
      const whole = Buffer.concat(this.fragments.parts);
      const op = this.fragments.opcode;
      this.fragments = null;
      this.deliverData(op, whole);
      return;
    }
    if (!fin) {
      this.fragments = { opcode, parts: [payload] };
      return;
    }
    this.deliverData(opcode, payload);
  }

  deliverData(opcode, data) {
    if (opcode === OP.text) {
      const text = data.toString('utf8');
      let json;
      try {
        json = JSON.parse(text);
      } catch (_) {
        json = undefined;
      }
      this.deliver({ type: 'text', data, text, json });
    } else {
      this.deliver({ type: 'binary', data });
    }
  }

  deliver(msg) {
    for (const l of this.listeners) l(msg);
    if (!this.discard) this.inbox.push(msg);
  }

  // Calls `fn(msg)` for every message from now on; returns an unsubscribe.
  listen(fn) {
    this.listeners.push(fn);
    return () => {
      this.listeners = this.listeners.filter((l) => l !== fn);
    };
  }

  write(bytes) {
    if (this.ended || this.socket.destroyed) return;
    this.socket.write(bytes);
  }

  sendFrame(opcode, payload, opts) {
    this.write(buildFrame(opcode, payload, opts));
  }

  sendText(text, opts) {
    this.sendFrame(OP.text, Buffer.from(text, 'utf8'), opts);
  }

  sendJson(value) {
    this.sendText(JSON.stringify(value));
  }

  sendBinary(bytes, opts) {
    this.sendFrame(OP.binary, bytes, opts);
  }

  nextRef() {
    this.refCounter += 1;
    return String(this.refCounter);
  }

  take(pred, opts) {
    return this.inbox.take(pred, opts);
  }

  // The phx_reply carrying `ref`.
  reply(ref, { timeout = DEFAULT_TIMEOUT_MS } = {}) {
    return this.take((m) => m.type === 'text' && Array.isArray(m.json) && m.json[3] === 'phx_reply' &&
      m.json[1] === ref, { timeout, what: `phx_reply with ref ${JSON.stringify(ref)}` });
  }

  // The next text message whose decoded array satisfies `pred(json)`.
  takeJson(pred, { timeout = DEFAULT_TIMEOUT_MS, what = 'a matching text message' } = {}) {
    return this.take((m) => m.type === 'text' && Array.isArray(m.json) && pred(m.json), { timeout, what });
  }

  // Sends phx_join and resolves with the decoded reply array.
  async join(topic, payload = {}, { joinRef } = {}) {
    const jr = joinRef || this.nextRef();
    this.sendJson([jr, jr, topic, 'phx_join', payload]);
    const r = await this.reply(jr);
    return r.json;
  }

  // Sends an event and resolves with the decoded reply array.
  async push(topic, event, payload, { joinRef = null, ref } = {}) {
    const r = ref || this.nextRef();
    this.sendJson([joinRef, r, topic, event, payload]);
    return (await this.reply(r)).json;
  }

  async heartbeat(ref) {
    const r = ref || this.nextRef();
    this.sendJson([null, r, 'phoenix', 'heartbeat', {}]);
    return (await this.reply(r)).json;
  }

  // Resolves with {code, reason, frame} once the TCP connection is gone.
  closeCode({ timeout = DEFAULT_TIMEOUT_MS } = {}) {
    return withTimeout(this.closed, timeout, 'the server to close the connection');
  }

  // Sends a close frame and waits for the server to end the connection.
  async close(code = 1000) {
    if (this.ended) return;
    this.write(buildFrame(OP.close, closePayload(code)));
    try {
      await withTimeout(this.closed, 3000, 'the server to close after our close frame');
    } finally {
      this.socket.destroy();
    }
  }

  destroy() {
    this.socket.destroy();
  }
}

// Opens a `ws` client to `url` and resolves with {ws} once open, or with
// {status, headers} if the server refused the upgrade with an HTTP status.
function wsUpgrade(url, { protocols, timeout = DEFAULT_TIMEOUT_MS, ...opts } = {}) {
  const ws = new WebSocket(url, protocols, opts);
  const p = new Promise((resolve, reject) => {
    ws.on('open', () => resolve({ ws }));
    ws.on('unexpected-response', (req, res) => {
      resolve({ status: res.statusCode, headers: res.headers });
      res.resume();
      req.destroy();
    });
    ws.on('error', (e) => reject(e));
  });
  return withTimeout(p, timeout, `the upgrade of ${url}`).catch((e) => {
    ws.terminate();
    throw e;
  });
}

// Sends `request` (the exact bytes of an HTTP request) on a new connection
// and resolves with every byte the server sent until it closed the
// connection: for comparing whole responses byte for byte.
function httpExchange(port, request, { timeout = DEFAULT_TIMEOUT_MS } = {}) {
  const socket = net.connect({ host: '127.0.0.1', port });
  const chunks = [];
  const done = new Promise((resolve, reject) => {
    socket.on('data', (c) => chunks.push(c));
    socket.on('error', reject);
    socket.on('close', () => resolve(Buffer.concat(chunks)));
    socket.on('connect', () => socket.write(request));
  });
  return withTimeout(done, timeout, `the server on port ${port} to answer and close`).finally(() => socket.destroy());
}

// The bytes of a WebSocket upgrade request for `path`, with `headers`.
function upgradeRequest(port, path, headers = {}) {
  return [
    `GET ${path} HTTP/1.1`,
    `Host: 127.0.0.1:${port}`,
    'Upgrade: websocket',
    'Connection: Upgrade',
    `Sec-WebSocket-Key: ${crypto.randomBytes(16).toString('base64')}`,
    'Sec-WebSocket-Version: 13',
    ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
    '',
    '',
  ].join('\r\n');
}

module.exports = { RawClient, buildFrame, closePayload, wsUpgrade, httpExchange, upgradeRequest, OP };

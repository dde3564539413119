#!/usr/bin/env python3
"""Writes the fuzzers' seed corpora.

protocol/fuzz/corpus/ (frame_fuzzer): each file is one option byte (low 3
bits: how many chunk sizes follow; high 5 bits: message limit / 32, 0 for
1 MiB), the chunk sizes (each byte + 1), then what a phoenix.js client would
send: masked frames.

protocol/fuzz/corpus_mesh/ (mesh_fuzzer): each file is one packed mesh
message (docs/PROTOCOL.md): every frame as a u32 little-endian length and
its bytes, the first frame being the header.

Run it from anywhere; it rewrites the files in place.
"""
import os
import struct

MASK = bytes([0x37, 0xFA, 0x21, 0x3D])


def frame(opcode, payload, fin=True, mask=MASK):
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n <= 0xFFFF:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + body


def text(s, **kw):
    return frame(0x1, s.encode() if isinstance(s, str) else s, **kw)


def close(code, reason=b""):
    return frame(0x8, struct.pack(">H", code) + reason)


def seed(stream, chunks=(), limit=0):
    assert len(chunks) < 8 and limit < 32
    return bytes([len(chunks) | limit << 3]) + bytes(c - 1 for c in chunks) + stream


JOIN = '["6","6","room:1","phx_join",{"p":1}]'
PUSH = '["6","13","room:1","ping",{"x":1}]'
HEARTBEAT = '[null,"16","phoenix","heartbeat",{}]'
BIN_PUSH = bytes([0, 1, 2, 6, 3]) + b"6" + b"15" + b"room:1" + b"bin" + bytes([1, 2, 3])
BROADCAST = b'[null,null,"room:1","shout",{"body":"hi"}]'
BIN_BROADCAST = bytes([2, 6, 3]) + b"room:1" + b"bin" + bytes([1, 2, 3])

SEEDS = {
    "join": seed(text(JOIN)),
    "heartbeat": seed(text(HEARTBEAT)),
    "session": seed(text(JOIN) + text(PUSH) + text(HEARTBEAT) + frame(0x9, b"") +
                    text('["6","20","room:1","phx_leave",{}]') + close(1000)),
    "session_chunked": seed(text(JOIN) + frame(0x9, b"hi") + text(PUSH), chunks=(1, 7, 3)),
    "binary_push": seed(frame(0x2, BIN_PUSH)),
    "fragmented": seed(text('["6","14","room:1","sh', fin=False) + frame(0xA, b"") +
                       frame(0x0, b'out",{"m":"h', fin=False) +
                       frame(0x0, b'i \\u00e9"}]')),
    "fragmented_binary": seed(frame(0x2, BIN_PUSH[:7], fin=False) + frame(0x9, b"p") +
                              frame(0x0, BIN_PUSH[7:])),
    "escapes": seed(text('["\\u0036",null,"caf\\u00e9","\\ud83d\\ude00",'
                         '{"n": 1.000000000000000000001, "s":"]\\"["}, "extra"]')),
    "medium_16bit": seed(text('["6","15","room:1","big",{"d":"' + "x" * 300 + '"}]'),
                         chunks=(100,)),
    "too_big": seed(text('["6","15","room:1","big",{"d":"' + "x" * 40 + '"}]'), limit=1),
    "close_reason": seed(close(1001, "going away".encode())),
    "close_empty": seed(frame(0x8, b"")),
    "invalid_utf8": seed(text(b'["6","7","t\xc3","e",{}]')),
}



def mesh(mtype, fields=b"", *frames):
    header = b"SB" + bytes([1, mtype]) + fields
    return b"".join(struct.pack("<I", len(f)) + f for f in (header,) + frames)


def u64(n):
    return struct.pack("<Q", n)


HELLO = (b'{"shard":"2","instance":"00c0ffee12345678","window":1000,'
         b'"topics":["room:1","room:2"],"presence":[{"topic":"room:1","metas":'
         b'[{"key":"alice","phx_ref":"F1","meta":{"phx_ref":"F1","online_at":"17"}}]}]}')
JOIN_META = b'{"key":"bob","phx_ref":"F2","meta":{"phx_ref":"F2","s":[1,2.5,null,true]}}'

MESH_SEEDS = {
    "hello": mesh(1, b"", HELLO),
    "hello_empty": mesh(1, b"", b'{"shard":"","instance":"0000000000000001","window":1,'
                                b'"topics":[],"presence":[]}'),
    "hello_members": mesh(1, b"", b'{"shard":"1","instance":"0000000000000002","window":1,'
                                  b'"heartbeat_ms":1000,"members":["0","1","2"],'
                                  b'"topics":[],"presence":[]}'),
    "hello_idempotency": mesh(1, b"", b'{"shard":"1","instance":"0000000000000003","window":1,'
                                      b'"idempotency":[{"key":"order-17","topic":"room:1",'
                                      b'"seq":3,"age_ms":1200}],"topics":[],"presence":[]}'),
    "members": mesh(15, b"", b'{"members":["0","1","2"]}'),
    "welcome": mesh(2, u64(0x5EED5EED12345678)),
    "reset": mesh(3),
    "heartbeat_shard": mesh(4, u64(0)),
    "heartbeat_broker": mesh(4, u64(0x5EED5EED12345678)),
    "subscribe": mesh(5, b"", b"room:1"),
    "unsubscribe": mesh(6, b"", b"room:1"),
    "publish": mesh(7, u64(1) + b"\x00", b"room:1", BROADCAST),
    "publish_binary": mesh(7, u64(2) + b"\x01", b"room:1", BIN_BROADCAST),
    "publish_keyed": mesh(7, u64(3) + b"\x04", b"room:1", BROADCAST, b"order-17"),
    "ack": mesh(8, u64(41)),
    "credit": mesh(9, struct.pack("<I", 64)),
    "presence_join": mesh(10, b"", b"room:1", b'{"joins":[' + JOIN_META + b'],"leaves":[]}'),
    "presence_leave": mesh(10, b"", b"room:1",
                           b'{"joins":[],"leaves":[{"key":"alice","phx_ref":"F1"}]}'),
    "deliver": mesh(11, u64(0x00C0FFEE12345678) + u64(7) + b"\x00", b"room:1", BROADCAST),
    "diff": mesh(12, b"", b"room:1", b'{"joins":{"bob":{"metas":[{"phx_ref":"F2"}]}},'
                                     b'"leaves":{}}'),
    "snapshot": mesh(13, b"", b"room:1", b'{"alice":{"metas":[{"phx_ref":"F1"}]}}'),
}


def batch(*packed):
    return mesh(14, b"", b"".join(struct.pack("<I", len(p)) + p for p in packed))


MESH_SEEDS["batch_deliveries"] = batch(MESH_SEEDS["deliver"], MESH_SEEDS["diff"],
                                       MESH_SEEDS["snapshot"])
MESH_SEEDS["batch_publishes"] = batch(MESH_SEEDS["publish"], MESH_SEEDS["publish_binary"],
                                      MESH_SEEDS["credit"])
# Between brokers: a kPeerData carries one packed message with its stream seq.
MESH_SEEDS["peer_interest"] = mesh(24, b"", b'{"topics":["room:1","room:2"]}')
MESH_SEEDS["peer_presence"] = mesh(25, b"", b"room:1", b'{"joins":[' + JOIN_META +
                                   b'],"leaves":[]}')
MESH_SEEDS["peer_data_deliver"] = mesh(22, u64(1), MESH_SEEDS["deliver"])
MESH_SEEDS["peer_data_interest"] = mesh(22, u64(2), MESH_SEEDS["peer_interest"])
MESH_SEEDS["peer_ack"] = mesh(23, u64(2))


def write(folder, seeds):
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), folder)
    os.makedirs(out, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    write("corpus", SEEDS)
    write("corpus_mesh", MESH_SEEDS)

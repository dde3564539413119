#!/usr/bin/env python3
"""Writes the frame fuzzer's seed corpus (protocol/fuzz/corpus/).

Each file is a fuzzer input: one option byte (low 3 bits: how many chunk
sizes follow; high 5 bits: message limit / 32, 0 for 1 MiB), the chunk sizes
(each byte + 1), then what a phoenix.js client would send: masked frames.
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

if __name__ == "__main__":
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
    os.makedirs(out, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)

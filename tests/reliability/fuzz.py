"""A mutation fuzzer for the decoders of everything a peer can send us.

Targets, each with the only exception it may raise:

=================================  ===============================  ============
target                             function                         may raise
=================================  ===============================  ============
``engineio.decode_text``           a WebSocket text frame           DecodeError
``engineio.decode_payload``        a long-polling body              DecodeError
``socketio.Decoder``               a text packet, then attachments  DecodeError
``socketio.event_data``            the hot path's ``2[...]``        DecodeError
``jsonwire.loads``                 JSON as socket.io sends it       DecodeError
``messages.decode``                a bus message                    BusDecodeError
``messages.decode_many``           a bus batch                      BusDecodeError
``commands.decode_command``        a command of the API channel     CommandError
=================================  ===============================  ============

Each input is a seed of valid traffic mutated 1 to 8 times: bit and byte
flips, insertions and deletions, duplicated ranges, splices with another
seed, digit runs swapped for edge numbers, interesting tokens, deepened
nesting, truncation.  Any other exception, or one input taking longer than
:data:`SLOW` seconds, is a *finding*, kept once per (target, exception, place).
``jsonwire`` values that decode also round-trip through ``dumps``.

Run it::

    python -m tests.reliability.fuzz --inputs 1000000 [--seed 1] [--target NAME] [--json out.json]
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from typing import Any

import attrs

from caas_socket.app.commands import CommandError, decode_command
from caas_socket.cluster import messages
from caas_socket.protocol import engineio, jsonwire, socketio
from caas_socket.protocol.errors import DecodeError

__all__ = ["TARGETS", "Finding", "Fuzzer", "main"]

#: An input slower than this is a finding (a hang in production).
SLOW = 0.5


def _socketio_decoder(data: bytes) -> None:
    """A text packet, then (if it asks for attachments) slices of the input as attachments."""
    decoder = socketio.Decoder(max_attachments=8)
    text, _, rest = data.partition(b"\x00")
    decoder.decode_text(text.decode("utf-8", "replace"))
    pieces = rest.split(b"\x00") if rest else [b"x"] * 8
    for piece in pieces[:9]:
        if not decoder.awaiting_binary:
            break
        decoder.decode_binary(piece)


def _text(function: Callable[[str], Any]) -> Callable[[bytes], Any]:
    def call(data: bytes) -> Any:
        return function(data.decode("utf-8", "replace"))

    call.__name__ = getattr(function, "__name__", "call")
    return call


def _jsonwire_round_trip(data: bytes) -> None:
    value = jsonwire.loads(data.decode("utf-8", "replace"))
    again = jsonwire.loads(jsonwire.dumps(value))
    if again != value:
        raise AssertionError(f"round trip changed {value!r} into {again!r}")


@attrs.frozen
class Target:
    name: str
    run: Callable[[bytes], Any]
    allowed: tuple[type[BaseException], ...]
    seeds: tuple[bytes, ...]


_EVENTS = (
    b'42["heartbeat"]',
    b'42["sync",{"a":1,"b":[true,false,null],"c":"\xc3\xa9\xf0\x9f\x98\x80"}]',
    b'421["presence:get",{"userIds":["u1","u2"]}]',
    b'42/admin,7["e",1.5e3,-0]',
    b"40",
    b'40{"token":"abc"}',
    b"40/custom,",
    b"41",
    b"41/custom,",
    b"430[]",
    b'43/nsp,12["a",{"b":2}]',
    b'44{"message":"nope","data":{"code":"x"}}',
    b'451-["bin",{"_placeholder":true,"num":0}]',
    b'452-/nsp,3["two",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]',
    b'461-9[{"_placeholder":true,"num":0}]',
    b"2",
    b"3",
    b"3probe",
    b"1",
    b"6",
    b'0{"sid":"x","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}',
)
_SOCKETIO = (
    *(e[1:] for e in _EVENTS if e[:1] == b"4"),
    b'51-["b",{"_placeholder":true,"num":0}]\x00\x01\x02',
    b'52-["b",[{"_placeholder":true,"num":1},{"_placeholder":true,"num":0}]]\x00a\x00b',
    b'50-["zero"]',
)
_JSON = (
    b'{"a":[1,2.5,-3e-7,true,false,null,"x\\u00e9\\ud83d\\ude00"],"b":{}}',
    b"[]",
    b'"\\"\\\\\\/\\b\\f\\n\\r\\t"',
    b"123456789012345678901234567890",
    b" \t\n[ 1 , { } ] ",
    b"-0.0e+0",
)
_BUS = (
    b'caas/1 {"t":"emit","nsp":"/","rooms":["user:acme:alice"],"except":["s1"]}\n'
    b'42["sync",{"a":1}]',
    b'caas/1 {"t":"emit","nsp":"/","rooms":null,"except":[],"bin":["AAEC","/w=="]}\n'
    b'451-["b",{"_placeholder":true,"num":0}]',
    b'caas/1 {"t":"close","sid":"s1","reason":"replaced","reconnect":false}\n',
    b'caas/1 {"t":"probe","from":"n1","nonce":"00ff"}\n',
    b'caas/1 {"t":"idle","entry":{"socketId":"s","userId":"u","tenantId":"t","deviceId":"d",'
    b'"serverId":"n","connectedAt":1,"lastActivity":2},"before":3}\n',
)
_BATCHES = (
    b"caas/1* " + b"".join(b"%d\n%s" % (len(m), m) for m in _BUS[:3]),
    b"caas/1* " + b"%d\n%s" % (len(_BUS[3]), _BUS[3]),
)
_COMMANDS = (
    b'{"v":1,"op":"emit","tenantId":"acme","userId":"alice","event":"msg","data":{"id":42}}',
    b'{"v":1,"op":"emit","tenantId":"acme","userId":"alice","deviceId":"phone","event":"ring"}',
    b'{"v":1,"op":"emit","tenantId":"acme","room":"chat-42","event":"message","data":"hi"}',
    b'{"v":1,"op":"join","tenantId":"acme","userId":"alice","rooms":["chat-42","chat-43"]}',
    b'{"v":1,"op":"leave","tenantId":"a:b","userId":"c%d","deviceId":"tv","rooms":["x"]}',
    b'{"v":1,"op":"disconnect","tenantId":"acme","userId":"alice","reason":"banned","reconnect":false}',
)
_PAYLOADS = (
    b"\x1e".join(_EVENTS[:6]),
    b"4hello\x1ebAAECAw==\x1e2",
    b"b" + base64.b64encode(bytes(range(40))),
)

TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("engineio.decode_text", _text(engineio.decode_text), (DecodeError,), _EVENTS),
        Target(
            "engineio.decode_payload", _text(engineio.decode_payload), (DecodeError,), _PAYLOADS
        ),
        Target("socketio.Decoder", _socketio_decoder, (DecodeError,), _SOCKETIO),
        Target(
            "socketio.event_data",
            _text(socketio.event_data),
            (DecodeError,),
            tuple(e[1:] for e in _EVENTS if e.startswith(b"42[")),
        ),
        Target("jsonwire.loads", _jsonwire_round_trip, (DecodeError,), _JSON),
        Target("messages.decode", messages.decode, (messages.BusDecodeError,), _BUS),
        Target("messages.decode_many", messages.decode_many, (messages.BusDecodeError,), _BATCHES),
        Target("commands.decode_command", decode_command, (CommandError,), _COMMANDS),
    )
}

_TOKENS = (
    b"[",
    b"]",
    b"{",
    b"}",
    b'"',
    b",",
    b":",
    b"-",
    b"/",
    b"\\",
    b"\\u",
    b"\\ud800",
    b"\x00",
    b"\x1e",
    b"\n",
    b" ",
    b"null",
    b"true",
    b"1e999",
    b"-1e999",
    b"NaN",
    b"Infinity",
    b"-0",
    b"9007199254740993",
    b"18446744073709551616",
    b"1" * 400,
    b"9" * 5000,
    b"0.0000001e-400",
    b'{"_placeholder":true,"num":0}',
    b'{"_placeholder":true,"num":-1}',
    b'{"_placeholder":true,"num":99}',
    b'{"_placeholder":"true","num":0}',
    b'"\xf0\x9f\x98\x80"',
    b"\xff",
    b"\xc3",
    b"\xed\xa0\x80",
    b'"t":',
    b'"emit"',
    b'"idle"',
    b'"close"',
    b'"probe"',
    b'"rooms":',
    b'"bin":["',
    b'"entry":{',
    b"caas/1 ",
    b"caas/1* ",
    b"99999999999\n",
    b'"v":1',
    b'"v":true',
    b'"op":"join"',
    b'"rooms":[]',
    b"\xe2\x80\xae",
    b"%3A",
    b"%",
)
_NUMBERS = (
    b"0",
    b"-1",
    b"1",
    b"63",
    b"64",
    b"65",
    b"255",
    b"256",
    b"65535",
    b"65536",
    b"2147483648",
    b"9007199254740991",
    b"9007199254740992",
    b"99999999999999999",
    b"1e308",
    b"-1e-308",
    b"1" * 4301,
    b"00",
    b"01",
    b"1.0",
    b"-0",
)


@attrs.frozen
class Finding:
    target: str
    error: str
    where: str
    message: str
    example: bytes

    def describe(self) -> str:
        shown = self.example[:160]
        more = f" (+{len(self.example) - 160} bytes)" if len(self.example) > 160 else ""
        return (
            f"{self.target}: {self.error} at {self.where}: {self.message[:200]}\n"
            f"    input {shown!r}{more}"
        )


class Fuzzer:
    """Mutates the seeds of the targets and runs them; :attr:`findings` is what broke."""

    def __init__(self, seed: int = 1, targets: list[str] | None = None) -> None:
        self.rng = random.Random(seed)
        self.targets = [TARGETS[name] for name in (targets or list(TARGETS))]
        self.findings: dict[tuple[str, str, str], Finding] = {}
        self.runs: Counter[str] = Counter()
        self.accepted: Counter[str] = Counter()
        self.slowest = 0.0
        self._all_seeds = [s for t in TARGETS.values() for s in t.seeds]

    # -- mutations ---------------------------------------------------------------

    def mutate(self, data: bytes, seeds: tuple[bytes, ...]) -> bytes:
        rng = self.rng
        out = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            choice = rng.randrange(12)
            n = len(out)
            at = rng.randint(0, n)
            if choice == 0 and n:  # bit flip
                i = rng.randrange(n)
                out[i] ^= 1 << rng.randrange(8)
            elif choice == 1 and n:  # byte replaced
                out[rng.randrange(n)] = rng.randrange(256)
            elif choice == 2:  # random bytes inserted
                out[at:at] = rng.randbytes(rng.randint(1, 8))
            elif choice == 3 and n:  # range deleted
                end = min(n, at + rng.randint(1, 16))
                del out[at:end]
            elif choice == 4 and n:  # range duplicated
                start = rng.randrange(n)
                piece = out[start : start + rng.randint(1, 32)]
                out[at:at] = piece * rng.randint(1, 4)
            elif choice == 5:  # splice with another seed
                other = rng.choice(seeds if rng.random() < 0.7 else self._all_seeds)
                cut = rng.randint(0, len(other))
                out = out[:at] + bytearray(other[cut:])
            elif choice == 6:  # an interesting token
                out[at:at] = rng.choice(_TOKENS)
            elif choice == 7:  # a digit run becomes an edge number
                self._renumber(out)
            elif choice == 8:  # deeper nesting around a piece
                depth = rng.choice((2, 10, 100, 600, 1200, 5000))
                start = rng.randint(0, n)
                end = rng.randint(start, n)
                out = out[:start] + b"[" * depth + out[start:end] + b"]" * depth + out[end:]
            elif choice == 10:  # a JSON value where a value may start
                self._insert_value(out)
            elif choice == 9 and n:  # truncated
                del out[rng.randint(0, n - 1) :]
            elif n > 1:  # swapped bytes
                i, j = rng.randrange(n), rng.randrange(n)
                out[i], out[j] = out[j], out[i]
        return bytes(out)

    def _insert_value(self, out: bytearray) -> None:
        starts = [i + 1 for i, b in enumerate(out) if b in b"[,:"]
        if not starts:
            return
        at = self.rng.choice(starts)
        depth = self.rng.choice((1, 50, 400, 600, 1000, 3000))
        value = self.rng.choice(
            (
                b"[" * depth + b"]" * depth,
                b'{"a":' * depth + b"0" + b"}" * depth,
                b"[" * depth + b'{"_placeholder":true,"num":0}' + b"]" * depth,
                b'"' + b"x" * depth * 10 + b'"',
                b"1" * depth,
            )
        )
        following = out[at : at + 1]
        out[at:at] = value + (b"" if following in (b"]", b"}", b"") else b",")

    def _renumber(self, out: bytearray) -> None:
        digits = [i for i, b in enumerate(out) if 48 <= b <= 57]
        if not digits:
            return
        start = end = self.rng.choice(digits)
        while start > 0 and 48 <= out[start - 1] <= 57:
            start -= 1
        while end < len(out) and 48 <= out[end] <= 57:
            end += 1
        out[start:end] = self.rng.choice(_NUMBERS)

    # -- running -----------------------------------------------------------------

    def run_one(self, target: Target, data: bytes) -> None:
        self.runs[target.name] += 1
        started = time.perf_counter()
        try:
            target.run(data)
            self.accepted[target.name] += 1
        except target.allowed:
            pass
        except Exception as e:  # anything else is a finding
            frames = traceback.extract_tb(e.__traceback__)
            ours = [f for f in frames if "caas_socket" in f.filename] or frames
            where = f"{ours[-1].filename.split('caas_socket/')[-1]}:{ours[-1].lineno}"
            key = (target.name, type(e).__name__, where)
            if key not in self.findings or len(data) < len(self.findings[key].example):
                self.findings[key] = Finding(target.name, type(e).__name__, where, str(e), data)
        elapsed = time.perf_counter() - started
        self.slowest = max(self.slowest, elapsed)
        if elapsed > SLOW:
            key = (target.name, "Slow", f"{elapsed:.2f}s")
            self.findings.setdefault(
                key, Finding(target.name, "Slow", f"{elapsed:.2f}s", "slow input", data)
            )

    def run(self, inputs: int) -> float:
        """Run ``inputs`` inputs spread over the targets (seeds first); returns the seconds."""
        started = time.perf_counter()
        for target in self.targets:
            for seed in target.seeds:
                self.run_one(target, seed)
        done = sum(self.runs.values())
        i = 0
        while done < inputs:
            target = self.targets[i % len(self.targets)]
            i += 1
            base = self.rng.choice(target.seeds)
            self.run_one(target, self.mutate(base, target.seeds))
            done += 1
        return time.perf_counter() - started

    def report(self) -> dict[str, Any]:
        return {
            "inputs": sum(self.runs.values()),
            "per_target": dict(self.runs),
            "accepted": dict(self.accepted),
            "slowest_s": round(self.slowest, 4),
            "findings": [
                attrs.asdict(f) | {"example": f.example[:400].decode("latin-1")}
                for f in self.findings.values()
            ],
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--target", action="append", choices=sorted(TARGETS), help="repeatable")
    parser.add_argument("--json", help="write the report here")
    args = parser.parse_args(argv)
    fuzzer = Fuzzer(args.seed, args.target)
    seconds = fuzzer.run(args.inputs)
    report = fuzzer.report() | {"seconds": round(seconds, 2), "seed": args.seed}
    total = report["inputs"]
    print(f"FIGURE: fuzz inputs = {total} (seed={args.seed})")
    print(f"FIGURE: fuzz inputs_per_second = {total / seconds:.0f} inputs/s ({seconds:.1f} s)")
    print(f"FIGURE: fuzz findings = {len(fuzzer.findings)}")
    for name, count in sorted(fuzzer.runs.items()):
        print(f"  {name:28} {count:>9} inputs, {fuzzer.accepted[name]:>8} accepted")
    for finding in fuzzer.findings.values():
        print("FINDING: " + finding.describe())
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 1 if fuzzer.findings else 0


if __name__ == "__main__":
    sys.exit(main())

// Engine.IO v4 / Socket.IO v5 conformance checks over raw WebSocket frames.
//
//   node conformance.mjs http://127.0.0.1:PORT [--only name,name]
//
// The server must run the reference configuration of the socket.io-protocol test suite
// (examples/conformance_server.py): pingInterval 300 ms, pingTimeout 200 ms, maxPayload
// 1000000, connectTimeout 1000 ms, an "auth" echo on connect to "/" and "/custom",
// "message" -> "message-back", "message-with-ack" acked with its arguments.
//
// Written from the protocol specifications (engine.io-protocol and socket.io-protocol
// READMEs). Frames are compared as exact strings / exact bytes. Unlike a bare WebSocket,
// our client answers the server's pings (unless a check says otherwise), so a "close"
// expectation can only be met by the behaviour under test, never by a ping timeout.
//
// Prints one JSON line per check: {"check","ok","ms","error"?}, then {"done":true,...}.
// Checks run concurrently, each on its own connections.

import { WebSocket } from "ws";

const PING_INTERVAL = 300;
const PING_TIMEOUT = 200;
const MAX_PAYLOAD = 1000000;
const CONNECT_TIMEOUT = 1000;
const QUICK = 300; // a reply or a close the server owes "at once"

const args = process.argv.slice(2);
const base = args.find((a) => /^https?:\/\//.test(a));
if (!base) {
  console.error("usage: node conformance.mjs http://127.0.0.1:PORT [--only a,b]");
  process.exit(2);
}
const onlyIndex = args.indexOf("--only");
const only = onlyIndex >= 0 ? new Set(args[onlyIndex + 1].split(",")) : null;
const HTTP = base.replace(/\/$/, "");
const WS = HTTP.replace(/^http/, "ws");
const PATH = "/socket.io/";

class CheckFailed extends Error {}

function expect(condition, message) {
  if (!condition) throw new CheckFailed(message);
}

function expectEqual(actual, expected, what) {
  expect(actual === expected, `${what}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
}

function show(frame) {
  if (frame === null) return "nothing";
  return frame.binary ? `binary <${frame.data.toString("hex")}>` : `text ${JSON.stringify(frame.data)}`;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// One WebSocket connection with a queue of received frames.
class Conn {
  constructor(ws, { autoPong }) {
    this.ws = ws;
    this.autoPong = autoPong;
    this.queue = [];
    this.waiters = [];
    this.pings = []; // arrival times of the server's pings
    this.closeInfo = null;
    this.closed = new Promise((resolve) => {
      ws.on("close", (code, reason) => {
        this.closeInfo = { code, reason: reason.toString(), at: Date.now() };
        resolve(this.closeInfo);
        this._wake();
      });
    });
    ws.on("error", () => {}); // a failed connection also closes
    ws.on("message", (data, isBinary) => {
      const frame = { binary: isBinary, data: isBinary ? Buffer.from(data) : data.toString("utf8") };
      if (!isBinary && frame.data === "2") {
        this.pings.push(Date.now());
        if (this.autoPong) ws.send("3");
        return;
      }
      this.queue.push(frame);
      this._wake();
    });
  }

  static open(query = "EIO=4&transport=websocket", { autoPong = true } = {}) {
    const ws = new WebSocket(`${WS}${PATH}?${query}`);
    const conn = new Conn(ws, { autoPong });
    return new Promise((resolve, reject) => {
      ws.once("open", () => {
        conn.openedAt = Date.now();
        resolve(conn);
      });
      ws.once("unexpected-response", (_req, res) =>
        reject(new CheckFailed(`handshake refused with HTTP ${res.statusCode}`)),
      );
      ws.once("error", (err) => reject(new CheckFailed(`cannot connect: ${err.message}`)));
    });
  }

  // Opened and past the Engine.IO open packet, which is returned.
  static async handshake(options) {
    const conn = await Conn.open(undefined, options);
    const open = await conn.next();
    expect(!open.binary && open.data.startsWith("0"), `expected the open packet, got ${show(open)}`);
    conn.sid = JSON.parse(open.data.slice(1)).sid;
    return conn;
  }

  // Connected to namespace "/" (or nsp), past the CONNECT reply and the "auth" event.
  static async socketio(nsp = "/") {
    const conn = await Conn.handshake();
    await conn.join(nsp);
    return conn;
  }

  async join(nsp = "/", payload = "") {
    const prefix = nsp === "/" ? "" : `${nsp},`;
    this.send(`40${prefix}${payload}`);
    const reply = await this.nextText();
    expect(reply.startsWith(`40${prefix}{`), `expected a CONNECT reply for ${nsp}, got ${JSON.stringify(reply)}`);
    const auth = await this.nextText();
    expectEqual(auth, `42${prefix}["auth",${payload || "{}"}]`, "auth event");
    return JSON.parse(reply.slice(2 + prefix.length));
  }

  _wake() {
    for (const wake of this.waiters.splice(0)) wake();
  }

  send(data) {
    this.ws.send(data);
  }

  // The next frame (pings excepted), or null once closed / after `within` ms.
  async next(within = QUICK) {
    const deadline = Date.now() + within;
    for (;;) {
      if (this.queue.length) return this.queue.shift();
      const left = deadline - Date.now();
      if (this.closeInfo || left <= 0) return null;
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  async nextText(within = QUICK) {
    const frame = await this.next(within);
    expect(frame !== null, `expected a frame within ${within} ms, got ${this.closeInfo ? "a close" : "nothing"}`);
    expect(!frame.binary, `expected a text frame, got ${show(frame)}`);
    return frame.data;
  }

  async nextBinary(within = QUICK) {
    const frame = await this.next(within);
    expect(frame !== null && frame.binary, `expected a binary frame, got ${show(frame)}`);
    return frame.data;
  }

  async expectText(expected, what, within = QUICK) {
    expectEqual(await this.nextText(within), expected, what);
  }

  async expectNothing(within, what) {
    const frame = await this.next(within);
    expect(frame === null, `${what}: expected no frame, got ${show(frame)}`);
    expect(!this.closeInfo, `${what}: expected the connection to stay open, it closed`);
  }

  // Closed by the server within `within` ms; returns the time it took since `since`.
  async expectClose(within, what, since = Date.now()) {
    const outcome = await Promise.race([this.closed, sleep(within).then(() => null)]);
    expect(outcome !== null, `${what}: expected the server to close within ${within} ms`);
    const extra = this.queue.filter((f) => !(f.binary === false && f.data === "2"));
    return { ms: outcome.at - since, extra };
  }

  end() {
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) {
      this.ws.terminate();
    }
  }
}

// A refused WebSocket handshake: its HTTP status and body.
function refusal(query) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${WS}${PATH}${query}`);
    ws.on("error", () => {});
    ws.once("open", () => {
      ws.terminate();
      reject(new CheckFailed(`handshake with ${JSON.stringify(query)} was accepted`));
    });
    ws.once("unexpected-response", (_req, res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk) => (body += chunk));
      res.on("end", () => resolve({ status: res.statusCode, type: res.headers["content-type"], body }));
      res.on("error", reject);
    });
  });
}

async function expectBadRequest(query, code, message) {
  const answer = await refusal(query);
  expectEqual(answer.status, 400, `HTTP status for ${query}`);
  expect(/^application\/json/.test(answer.type || ""), `content type for ${query}: ${answer.type}`);
  let body;
  try {
    body = JSON.parse(answer.body);
  } catch {
    throw new CheckFailed(`body for ${query} is not JSON: ${JSON.stringify(answer.body)}`);
  }
  expect(body.code === code && body.message === message,
    `body for ${query}: expected ${JSON.stringify({ code, message })}, got ${answer.body}`);
}

const PLACEHOLDERS = '{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}';

const checks = {
  // -- Engine.IO ------------------------------------------------------------------------
  async "eio-open-packet"() {
    const conn = await Conn.open();
    try {
      const open = await conn.nextText();
      const match = /^0\{"sid":"([^"]+)","upgrades":\[\],"pingInterval":300,"pingTimeout":200,"maxPayload":1000000\}$/.exec(open);
      expect(match, `open packet: ${JSON.stringify(open)}`);
      const value = JSON.parse(open.slice(1));
      expectEqual(Object.keys(value).sort().join(","), "maxPayload,pingInterval,pingTimeout,sid,upgrades", "open packet keys");
      expect(value.pingInterval === PING_INTERVAL && value.pingTimeout === PING_TIMEOUT && value.maxPayload === MAX_PAYLOAD, "open packet values");
    } finally {
      conn.end();
    }
  },

  async "eio-invalid-eio"() {
    await expectBadRequest("?transport=websocket", 5, "Unsupported protocol version");
    await expectBadRequest("?EIO=abc&transport=websocket", 5, "Unsupported protocol version");
    await expectBadRequest("?EIO=3&transport=websocket", 5, "Unsupported protocol version");
  },

  async "eio-invalid-transport"() {
    await expectBadRequest("?EIO=4", 0, "Transport unknown");
    await expectBadRequest("?EIO=4&transport=abc", 0, "Transport unknown");
  },

  async "eio-polling-request-refused"() {
    // Only WebSocket is served: a long-polling handshake is an unknown transport.
    const response = await fetch(`${HTTP}${PATH}?EIO=4&transport=polling`);
    expectEqual(response.status, 400, "HTTP status");
    const body = await response.text();
    expectEqual(body, '{"code":0,"message":"Transport unknown"}', "body");
  },

  async "eio-heartbeat"() {
    // Joined to "/", so that only a missed pong could end the session (not connectTimeout).
    const conn = await Conn.socketio();
    try {
      const deadline = Date.now() + 3 * PING_INTERVAL + PING_TIMEOUT + 400;
      while (conn.pings.length < 3 && !conn.closeInfo && Date.now() < deadline) await sleep(20);
      expect(!conn.closeInfo, `closed after ${conn.pings.length} pings despite our pongs`);
      expect(conn.pings.length >= 3, `${conn.pings.length} pings in ${deadline - conn.openedAt} ms`);
      const gaps = conn.pings.map((t, i) => t - (i ? conn.pings[i - 1] : conn.openedAt));
      for (const gap of gaps) {
        expect(gap >= PING_INTERVAL - 60 && gap <= PING_INTERVAL + 200, `ping gaps ${gaps} ms, expected ~${PING_INTERVAL}`);
      }
      conn.send('42["message","still there"]'); // the session is usable
      await conn.expectText('42["message-back","still there"]', "event after pings");
    } finally {
      conn.end();
    }
  },

  async "eio-ping-timeout"() {
    const conn = await Conn.handshake({ autoPong: false });
    const { ms } = await conn.expectClose(PING_INTERVAL + PING_TIMEOUT + 600, "no pong", conn.openedAt);
    expect(conn.pings.length === 1, `expected one unanswered ping before the close, saw ${conn.pings.length}`);
    const expected = PING_INTERVAL + PING_TIMEOUT;
    expect(ms >= expected - 60 && ms <= expected + 250, `closed ${ms} ms after open, expected ~${expected}`);
  },

  async "eio-client-close"() {
    const conn = await Conn.handshake();
    conn.send("1");
    await conn.expectClose(QUICK, 'after "1"');
  },

  async "eio-client-ping-closes"() {
    // In v4 only the server pings; a client ping is a protocol error.
    const conn = await Conn.handshake();
    conn.send("2");
    await conn.expectClose(QUICK, 'after a client "2"');
  },

  async "eio-connect-timeout"() {
    // Pongs keep the session alive, but no namespace is ever joined.
    const conn = await Conn.handshake();
    const { ms } = await conn.expectClose(CONNECT_TIMEOUT + 600, "no CONNECT", conn.openedAt);
    expect(ms >= CONNECT_TIMEOUT - 60 && ms <= CONNECT_TIMEOUT + 300, `closed ${ms} ms after open, expected ~${CONNECT_TIMEOUT}`);
  },

  // -- Socket.IO: connect -----------------------------------------------------------------
  async "sio-connect-main"() {
    const conn = await Conn.handshake();
    try {
      conn.send("40");
      const reply = await conn.nextText();
      expect(/^40\{"sid":"[^"]+"\}$/.test(reply), `CONNECT reply ${JSON.stringify(reply)}`);
      expectEqual(Object.keys(JSON.parse(reply.slice(2))).join(","), "sid", "CONNECT reply keys");
      expect(JSON.parse(reply.slice(2)).sid !== conn.sid, "the socket id is not the Engine.IO sid");
      await conn.expectText('42["auth",{}]', "auth event");
    } finally {
      conn.end();
    }
  },

  async "sio-connect-main-with-payload"() {
    const conn = await Conn.handshake();
    try {
      conn.send('40{"token":"123"}');
      expect(/^40\{"sid":"[^"]+"\}$/.test(await conn.nextText()), "CONNECT reply");
      await conn.expectText('42["auth",{"token":"123"}]', "auth event");
    } finally {
      conn.end();
    }
  },

  async "sio-connect-custom"() {
    const conn = await Conn.handshake();
    try {
      conn.send("40/custom,");
      const reply = await conn.nextText();
      expect(/^40\/custom,\{"sid":"[^"]+"\}$/.test(reply), `CONNECT reply ${JSON.stringify(reply)}`);
      await conn.expectText('42/custom,["auth",{}]', "auth event");
    } finally {
      conn.end();
    }
  },

  async "sio-connect-custom-without-comma"() {
    const conn = await Conn.handshake();
    try {
      conn.send("40/custom");
      const reply = await conn.nextText();
      expect(/^40\/custom,\{"sid":"[^"]+"\}$/.test(reply), `CONNECT reply ${JSON.stringify(reply)}`);
      await conn.expectText('42/custom,["auth",{}]', "auth event");
    } finally {
      conn.end();
    }
  },

  async "sio-connect-custom-with-payload"() {
    const conn = await Conn.handshake();
    try {
      conn.send('40/custom,{"token":"abc"}');
      expect(/^40\/custom,\{"sid":"[^"]+"\}$/.test(await conn.nextText()), "CONNECT reply");
      await conn.expectText('42/custom,["auth",{"token":"abc"}]', "auth event");
    } finally {
      conn.end();
    }
  },

  async "sio-unknown-namespace"() {
    const conn = await Conn.handshake();
    try {
      conn.send("40/random");
      await conn.expectText('44/random,{"message":"Invalid namespace"}', "CONNECT_ERROR");
      // Only that namespace is refused: the connection still serves "/".
      await conn.join("/");
    } finally {
      conn.end();
    }
  },

  async "sio-invalid-connect-packet"() {
    const conn = await Conn.handshake();
    conn.send("4abc");
    await conn.expectClose(QUICK, 'after "4abc"');
  },

  // -- Socket.IO: disconnect ----------------------------------------------------------------
  async "sio-disconnect-main"() {
    const conn = await Conn.socketio();
    try {
      conn.send("41");
      conn.send('42["message","after leaving"]');
      await conn.expectNothing(QUICK, "event after leaving /");
      // The Engine.IO session outlives the namespace: joining again works.
      const again = await conn.join("/");
      expect(typeof again.sid === "string", "a new socket id");
      conn.send('42["message","back"]');
      await conn.expectText('42["message-back","back"]', "event after joining again");
    } finally {
      conn.end();
    }
  },

  async "sio-disconnect-custom"() {
    const conn = await Conn.socketio();
    try {
      await conn.join("/custom");
      conn.send("41/custom");
      conn.send('42/custom,["message","to custom"]');
      conn.send('42["message","message to main namespace"]');
      await conn.expectText('42["message-back","message to main namespace"]', "event on /");
      await conn.expectNothing(QUICK, "event on the /custom namespace we left");
    } finally {
      conn.end();
    }
  },

  // -- Socket.IO: messages -------------------------------------------------------------------
  async "sio-event-plain-text"() {
    const conn = await Conn.socketio();
    try {
      conn.send('42["message",1,"2",{"3":[true]}]');
      await conn.expectText('42["message-back",1,"2",{"3":[true]}]', "message-back");
    } finally {
      conn.end();
    }
  },

  async "sio-event-custom-namespace"() {
    const conn = await Conn.socketio("/custom");
    try {
      conn.send('42/custom,["message",1,"2",{"3":[true]}]');
      await conn.expectText('42/custom,["message-back",1,"2",{"3":[true]}]', "message-back");
    } finally {
      conn.end();
    }
  },

  async "sio-event-binary"() {
    const conn = await Conn.socketio();
    try {
      conn.send(`452-["message",${PLACEHOLDERS}]`);
      conn.send(Uint8Array.from([1, 2, 3]));
      conn.send(Uint8Array.from([4, 5, 6]));
      await conn.expectText(`452-["message-back",${PLACEHOLDERS}]`, "binary event");
      expectEqual((await conn.nextBinary()).toString("hex"), "010203", "attachment 0");
      expectEqual((await conn.nextBinary()).toString("hex"), "040506", "attachment 1");
    } finally {
      conn.end();
    }
  },

  async "sio-ack-plain-text"() {
    const conn = await Conn.socketio();
    try {
      conn.send('42456["message-with-ack",1,"2",{"3":[false]}]');
      await conn.expectText('43456[1,"2",{"3":[false]}]', "ack");
    } finally {
      conn.end();
    }
  },

  async "sio-ack-binary"() {
    const conn = await Conn.socketio();
    try {
      conn.send(`452-789["message-with-ack",${PLACEHOLDERS}]`);
      conn.send(Uint8Array.from([1, 2, 3]));
      conn.send(Uint8Array.from([4, 5, 6]));
      await conn.expectText(`462-789[${PLACEHOLDERS}]`, "binary ack");
      expectEqual((await conn.nextBinary()).toString("hex"), "010203", "attachment 0");
      expectEqual((await conn.nextBinary()).toString("hex"), "040506", "attachment 1");
    } finally {
      conn.end();
    }
  },

  // -- Socket.IO: malformed packets close the connection ------------------------------------
  async "sio-malformed-unknown-type"() {
    const conn = await Conn.socketio();
    conn.send("4abc");
    await conn.expectClose(QUICK, 'after "4abc"');
  },

  async "sio-malformed-packet-type-digit"() {
    const conn = await Conn.socketio();
    conn.send('49["message"]');
    await conn.expectClose(QUICK, 'after "49[...]"');
  },

  async "sio-malformed-payload"() {
    const conn = await Conn.socketio();
    conn.send("42{}");
    await conn.expectClose(QUICK, 'after "42{}"');
  },

  async "sio-malformed-ack-id"() {
    const conn = await Conn.socketio();
    conn.send('42abc["message-with-ack",1,"2",{"3":[false]}]');
    await conn.expectClose(QUICK, 'after "42abc[...]"');
  },

  async "sio-malformed-null-connect-payload"() {
    // The CONNECT payload is optional, but when present it must be an object: null is not.
    const conn = await Conn.handshake();
    conn.send("40null");
    await conn.expectClose(QUICK, 'after "40null"');
  },

  async "sio-malformed-placeholder"() {
    const conn = await Conn.socketio();
    conn.send('451-["message",{"_placeholder":true,"num":1}]');
    conn.send(Uint8Array.from([1]));
    await conn.expectClose(QUICK, "after a placeholder with no attachment");
  },
};

async function run(name, check) {
  const started = Date.now();
  try {
    await check();
    return { check: name, ok: true, ms: Date.now() - started };
  } catch (err) {
    return { check: name, ok: false, ms: Date.now() - started, error: err instanceof Error ? err.message : String(err) };
  }
}

const selected = Object.entries(checks).filter(([name]) => !only || only.has(name));
const results = await Promise.all(selected.map(([name, check]) => run(name, check)));
for (const result of results) process.stdout.write(JSON.stringify(result) + "\n");
const failed = results.filter((r) => !r.ok).length;
process.stdout.write(JSON.stringify({ done: true, total: results.length, failed }) + "\n", () =>
  process.exit(failed ? 1 : 0),
);

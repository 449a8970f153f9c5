// A remote-controlled socket.io-client: JSON-line commands on stdin, JSON-line events on stdout.
//
// One process holds any number of clients (to any number of servers), each named by the
// caller's "id". Every command may carry a "ref" that is echoed in the events it causes
// (acks, errors). Binary values travel as {"$bin": "<base64>"} in both directions.
//
// Commands:
//   {"cmd":"connect","id":"c1","url":"ws://127.0.0.1:PORT[/nsp]","auth":{...},"query":{...},
//    "opts":{...extra io() options...},"acks":{"event":[args...]},"authTokens":["jwt1",...]}
//      With "authTokens", auth is a function (called before every connection attempt) giving
//      {...auth, token: the next token of the list}; the last one is reused once all were used.
//   {"cmd":"emit","id":"c1","event":"name","args":[...],"ack":true,"timeout":ms,"ref":"r1"}
//   {"cmd":"on-ack","id":"c1","event":"name","args":[...]}   ack that server event with args
//   {"cmd":"open","id":"c1"}           socket.connect() again (manual reconnection)
//   {"cmd":"disconnect","id":"c1"}     socket.disconnect()
//   {"cmd":"close-engine","id":"c1"}   drop the TCP connection, no WebSocket close frame
//   {"cmd":"pause-pongs","id":"c1"} / {"cmd":"resume-pongs","id":"c1"}
//   {"cmd":"exit"}
//
// Events ("t" is Date.now() when written):
//   {"type":"ready"}                                        once, at start
//   {"id","type":"connect","sid"}
//   {"id","type":"connect_error","message","data","active"} active: will the client retry?
//   {"id","type":"disconnect","reason","description","active"}
//   {"id","type":"event","name","args","ack"}               any server event
//   {"id","type":"ack","ref","args"} or {"id","type":"ack","ref","error"}
//   {"id","type":"acked","name","ref"}                       an on-ack handler answered
//   {"id","type":"auth-token","call"}                        the auth function gave token n
//   {"id","type":"reconnect_attempt","attempt"}, "reconnect", "reconnect_error", "reconnect_failed"
//   {"id","type":"pong-dropped"}                             a pong withheld by pause-pongs
//   {"type":"error","message","cmd","ref"}                   a bad command, never fatal

import readline from "node:readline";
import { io } from "socket.io-client";

// The options our apps pass to io(); a command's "opts" override them.
const APP_OPTIONS = {
  transports: ["websocket"],
  reconnection: true,
  reconnectionAttempts: 10,
  reconnectionDelay: 1000,
  reconnectionDelayMax: 30000,
};

const clients = new Map(); // id -> { socket, pausePongs }

function out(event) {
  process.stdout.write(JSON.stringify({ t: Date.now(), ...event }) + "\n");
}

function encode(value) {
  if (Buffer.isBuffer(value)) return { $bin: value.toString("base64") };
  if (value instanceof ArrayBuffer) return { $bin: Buffer.from(value).toString("base64") };
  if (ArrayBuffer.isView(value)) {
    return { $bin: Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString("base64") };
  }
  if (Array.isArray(value)) return value.map(encode);
  if (value !== null && typeof value === "object") {
    const result = {};
    for (const [k, v] of Object.entries(value)) result[k] = encode(v);
    return result;
  }
  if (typeof value === "function") return { $function: true };
  return value;
}

function decode(value) {
  if (Array.isArray(value)) return value.map(decode);
  if (value !== null && typeof value === "object") {
    const keys = Object.keys(value);
    if (keys.length === 1 && keys[0] === "$bin" && typeof value.$bin === "string") {
      return Buffer.from(value.$bin, "base64");
    }
    const result = {};
    for (const [k, v] of Object.entries(value)) result[k] = decode(v);
    return result;
  }
  return value;
}

function describe(details) {
  if (details === undefined || details === null) return null;
  if (details instanceof Error) return details.message;
  if (typeof details === "object") {
    const shown = {};
    for (const [k, v] of Object.entries(details)) {
      shown[k] = v instanceof Error ? v.message : typeof v === "object" ? String(v) : v;
    }
    return shown;
  }
  return String(details);
}

class CommandError extends Error {}

function clientOf(cmd) {
  const client = clients.get(cmd.id);
  if (!client) throw new CommandError(`no client ${JSON.stringify(cmd.id)}`);
  return client;
}

// Withhold pongs (the engine still resets its own ping timer on each ping, so only the
// server can notice). Installed on every engine the manager opens, so it survives reconnects.
function patchEngine(id, client) {
  const engine = client.socket.io.engine;
  if (!engine || engine.__caasPatched) return;
  engine.__caasPatched = true;
  const send = engine._sendPacket;
  engine._sendPacket = function (type, ...rest) {
    if (type === "pong" && client.pausePongs) {
      out({ id, type: "pong-dropped" });
      return;
    }
    return send.call(this, type, ...rest);
  };
}

function connect(cmd) {
  const { id, url } = cmd;
  if (typeof id !== "string" || !id) throw new CommandError("connect needs a string id");
  if (typeof url !== "string") throw new CommandError("connect needs a url");
  if (clients.has(id)) throw new CommandError(`client ${JSON.stringify(id)} exists; use "open"`);
  const options = { ...APP_OPTIONS, ...(cmd.opts || {}), forceNew: true };
  if (cmd.auth !== undefined) options.auth = decode(cmd.auth);
  if (cmd.authTokens !== undefined) options.auth = authFunction(id, cmd);
  if (cmd.query !== undefined) options.query = cmd.query;
  const socket = io(url, options);
  const client = { socket, pausePongs: false };
  clients.set(id, client);

  for (const [event, args] of Object.entries(cmd.acks || {})) addAckHandler(id, socket, event, args);

  socket.on("connect", () => out({ id, type: "connect", sid: socket.id }));
  socket.on("connect_error", (err) =>
    out({
      id,
      type: "connect_error",
      message: err.message,
      data: encode(err.data ?? null),
      description: describe(err.description),
      active: socket.active,
    }),
  );
  socket.on("disconnect", (reason, details) =>
    out({ id, type: "disconnect", reason, description: describe(details), active: socket.active }),
  );
  socket.onAny((name, ...args) => {
    let ack = false;
    if (args.length && typeof args[args.length - 1] === "function") {
      args.pop();
      ack = true;
    }
    out({ id, type: "event", name, args: encode(args), ack });
  });
  const manager = socket.io;
  manager.on("open", () => patchEngine(id, client));
  manager.on("reconnect_attempt", (attempt) => out({ id, type: "reconnect_attempt", attempt }));
  manager.on("reconnect", (attempt) => out({ id, type: "reconnect", attempt }));
  manager.on("reconnect_error", (err) => out({ id, type: "reconnect_error", message: err.message }));
  manager.on("reconnect_failed", () => out({ id, type: "reconnect_failed" }));
  manager.on("error", (err) => out({ id, type: "manager_error", message: err.message }));
}

// socket.io-client calls a function auth before every connection attempt: how an app
// hands a fresh token to each reconnection.
function authFunction(id, cmd) {
  const tokens = cmd.authTokens;
  if (!Array.isArray(tokens) || !tokens.length || !tokens.every((t) => typeof t === "string")) {
    throw new CommandError("authTokens must be a non-empty list of strings");
  }
  const base = cmd.auth !== undefined ? decode(cmd.auth) : {};
  let calls = 0;
  return (callback) => {
    const token = tokens[Math.min(calls, tokens.length - 1)];
    calls += 1;
    out({ id, type: "auth-token", call: calls });
    callback({ ...base, token });
  };
}

function addAckHandler(id, socket, event, args, ref) {
  const answer = decode(args || []);
  socket.on(event, (...received) => {
    const callback = received.length ? received[received.length - 1] : null;
    if (typeof callback !== "function") return;
    callback(...answer);
    out({ id, type: "acked", name: event, ref });
  });
}

function emit(cmd) {
  const { socket } = clientOf(cmd);
  if (typeof cmd.event !== "string") throw new CommandError("emit needs an event name");
  const args = decode(cmd.args || []);
  const { id, ref } = cmd;
  if (!cmd.ack) {
    socket.emit(cmd.event, ...args);
    return;
  }
  if (typeof cmd.timeout === "number") {
    socket.timeout(cmd.timeout).emit(cmd.event, ...args, (err, ...result) => {
      if (err) out({ id, type: "ack", ref, error: err.message });
      else out({ id, type: "ack", ref, args: encode(result) });
    });
  } else {
    socket.emit(cmd.event, ...args, (...result) => out({ id, type: "ack", ref, args: encode(result) }));
  }
}

function closeEngine(cmd) {
  const { socket } = clientOf(cmd);
  const ws = socket.io.engine?.transport?.ws;
  if (!ws) throw new CommandError("no open WebSocket to close");
  ws.terminate(); // destroys the TCP socket: no close frame, like a pulled cable
}

const COMMANDS = {
  connect,
  emit,
  "on-ack": (cmd) => {
    const { socket } = clientOf(cmd);
    if (typeof cmd.event !== "string") throw new CommandError("on-ack needs an event name");
    addAckHandler(cmd.id, socket, cmd.event, cmd.args, cmd.ref);
  },
  open: (cmd) => clientOf(cmd).socket.connect(),
  disconnect: (cmd) => clientOf(cmd).socket.disconnect(),
  "close-engine": closeEngine,
  "pause-pongs": (cmd) => {
    const client = clientOf(cmd);
    client.pausePongs = true;
    patchEngine(cmd.id, client);
  },
  "resume-pongs": (cmd) => {
    clientOf(cmd).pausePongs = false;
  },
  exit: () => shutdown(0),
};

function handle(line) {
  if (!line.trim()) return;
  let cmd = null;
  try {
    cmd = JSON.parse(line);
    if (cmd === null || typeof cmd !== "object" || Array.isArray(cmd)) {
      throw new CommandError("a command is a JSON object");
    }
    const run = COMMANDS[cmd.cmd];
    if (!run) throw new CommandError(`unknown command ${JSON.stringify(cmd.cmd)}`);
    run(cmd);
  } catch (err) {
    out({
      id: cmd?.id,
      type: "error",
      message: err instanceof Error ? err.message : String(err),
      cmd: cmd?.cmd ?? null,
      ref: cmd?.ref,
    });
  }
}

let exiting = false;

function shutdown(code) {
  if (exiting) return;
  exiting = true;
  for (const { socket } of clients.values()) {
    try {
      socket.disconnect();
    } catch {
      // already gone
    }
  }
  out({ type: "bye" });
  // stdout is asynchronous on pipes: exit once it is flushed.
  process.stdout.write("", () => process.exit(code));
}

process.on("uncaughtException", (err) => out({ type: "error", message: `uncaught: ${err.message}` }));
process.on("unhandledRejection", (err) =>
  out({ type: "error", message: `unhandled rejection: ${err instanceof Error ? err.message : err}` }),
);

const input = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
input.on("line", handle);
input.on("close", () => shutdown(0)); // the test process went away
out({ type: "ready" });

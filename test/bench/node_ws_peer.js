#!/usr/bin/env node
// The Node.js baseline for car-bench: the benchmarked JSON-RPC subset over the `ws` package
// (test/integration/node_modules), written the way a Node service would idiomatically write it.
//
//   node test/bench/node_ws_peer.js [--port N | --unix PATH]
//
// Prints `listening ws://127.0.0.1:PORT` or `listening unix:PATH` on stderr when ready (the same
// line car-daemon prints). Methods: server.handshake (same result bytes as car-daemon),
// runs.start, runs.record_turns (stamps indexes, fans each turn out to every subscriber — the
// notification is serialized once and the same string sent to each), runs.subscribe (snapshot +
// live events), runs.unsubscribe. No persistence, no auth, no limits: it is a floor to compare
// against, not a daemon.
'use strict';

const path = require('path');
const http = require('http');
const crypto = require('crypto');
const { WebSocketServer } = require(path.join(__dirname, '../integration/node_modules/ws'));

const args = process.argv.slice(2);
let port = 0;
let unixPath = null;
for (let i = 0; i < args.length; ++i) {
  if (args[i] === '--port') port = Number(args[++i]);
  else if (args[i] === '--unix') unixPath = args[++i];
  else {
    process.stderr.write(`node_ws_peer: unknown argument ${args[i]}\n`);
    process.exit(2);
  }
}

const runs = new Map(); // run_id -> {run_id, agent_id, turns: [], subscribers: Set<ws>}

function reply(ws, id, result) {
  ws.send(JSON.stringify({ jsonrpc: '2.0', id, result }));
}

function error(ws, id, code, message) {
  ws.send(JSON.stringify({ jsonrpc: '2.0', id, error: { code, message } }));
}

const methods = {
  'server.handshake'(ws, id, params) {
    reply(ws, id, {
      protocol_version: 2,
      server_version: '0.1.0',
      client_protocol_version: params.protocol_version,
    });
  },
  'runs.start'(ws, id, params) {
    const run = {
      run_id: crypto.randomUUID(),
      agent_id: params.agent_id || 'default',
      turns: [],
      subscribers: new Set(),
    };
    runs.set(run.run_id, run);
    reply(ws, id, { run_id: run.run_id, agent_id: run.agent_id });
  },
  'runs.record_turns'(ws, id, params) {
    const run = runs.get(params.run_id);
    if (!run) {
      reply(ws, id, { run_id: params.run_id, base_index: 0, count: 0, ok: false, dropped: 'run_not_found' });
      return;
    }
    const base = run.turns.length;
    for (const turn of params.turns) {
      const record = { record: 'turn', index: run.turns.length, ...turn, verifier_verdict: 'not_run' };
      run.turns.push(record);
      if (run.subscribers.size === 0) continue;
      // Serialize once, send the same string to every subscriber.
      const frame = JSON.stringify({
        jsonrpc: '2.0',
        method: 'runs.trace.event',
        params: { run_id: run.run_id, agent_id: run.agent_id, record, cursor: run.turns.length, status: 'in_progress' },
      });
      for (const sub of run.subscribers) sub.send(frame);
    }
    reply(ws, id, { run_id: run.run_id, base_index: base, count: params.turns.length, ok: true });
  },
  'runs.subscribe'(ws, id, params) {
    const run = runs.get(params.run_id);
    if (!run) {
      error(ws, id, -32602, `unknown run '${params.run_id}'`);
      return;
    }
    // Reply first, then join: the reply is always written before any event.
    reply(ws, id, {
      run_id: run.run_id,
      agent_id: run.agent_id,
      turns_so_far: run.turns,
      cursor: run.turns.length,
      status: 'in_progress',
    });
    run.subscribers.add(ws);
    ws.subscriptions.add(run);
  },
  'runs.unsubscribe'(ws, id, params) {
    const run = runs.get(params.run_id);
    const removed = !!run && run.subscribers.delete(ws);
    if (run) ws.subscriptions.delete(run);
    reply(ws, id, { run_id: params.run_id, removed });
  },
};

const server = http.createServer();
const wss = new WebSocketServer({ server, perMessageDeflate: false });
wss.on('connection', (ws) => {
  ws.subscriptions = new Set();
  ws.on('message', (data, isBinary) => {
    if (isBinary) return;
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      ws.send(JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: -32700, message: 'parse error' } }));
      return;
    }
    const method = methods[msg.method];
    if (!method) {
      if (msg.id !== undefined) error(ws, msg.id, -32601, `method not found: ${msg.method}`);
      return;
    }
    method(ws, msg.id, msg.params || {});
  });
  ws.on('close', () => {
    for (const run of ws.subscriptions) run.subscribers.delete(ws);
  });
  ws.on('error', () => {});
});

function ready() {
  const address = server.address();
  if (typeof address === 'string') process.stderr.write(`listening unix:${address}\n`);
  else process.stderr.write(`listening ws://127.0.0.1:${address.port}\n`);
}
if (unixPath) {
  try {
    require('fs').unlinkSync(unixPath);
  } catch {}
  server.listen(unixPath, ready);
} else {
  server.listen(port, '127.0.0.1', ready);
}
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(0));

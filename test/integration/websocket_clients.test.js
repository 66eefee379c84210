// Interop with npm `ws` (the Node.js WebSocket library) and the `wscat` command-line client
// against car-daemon over TCP (PROTOCOL.md §1; acceptance 41, 43).
'use strict';
const assert = require('assert');
const fs = require('fs');
const path = require('path');
const { execFile } = require('child_process');
const WebSocket = require('ws');
const { startDaemon } = require('./daemon');

function open(url, options) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, options);
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
    ws.once('unexpected-response', (req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
  });
}

function nextMessage(ws) {
  return new Promise((resolve) => ws.once('message', (data) => resolve(JSON.parse(data.toString()))));
}

async function withDaemon(args, fn) {
  const d = startDaemon(['--listen', '127.0.0.1:0', ...args]);
  await d.ready;
  try {
    await fn(d.listening.find((l) => l.startsWith('ws://')), d);
  } finally {
    if (d.child.exitCode === null) d.child.kill('SIGKILL');
  }
}

module.exports = {
  async ws_request_reply_and_concurrency() {
    await withDaemon(['--no-auth'], async (url) => {
      const ws = await open(url);
      const replies = new Map();
      const all = new Promise((resolve) => ws.on('message', (data) => {
        const msg = JSON.parse(data.toString());
        replies.set(msg.id, msg);
        if (replies.size === 100) resolve();
      }));
      for (let i = 0; i < 100; i++) {
        ws.send(JSON.stringify({ jsonrpc: '2.0', id: i, method: 'server.handshake', params: { protocol_version: 2 } }));
      }
      await all;
      for (let i = 0; i < 100; i++) assert.strictEqual(replies.get(i).result.protocol_version, 2);
      ws.close(1000);
      const [code] = await new Promise((resolve) => ws.once('close', (...a) => resolve(a)));
      assert.strictEqual(code, 1000);
    });
  },

  async ws_ping_pong_with_payload() {
    await withDaemon(['--no-auth'], async (url) => {
      const ws = await open(url);
      const pong = new Promise((resolve) => ws.once('pong', (data) => resolve(data.toString())));
      ws.ping('hello-ping');
      assert.strictEqual(await pong, 'hello-ping');
      ws.terminate();
    });
  },

  async ws_large_fragmented_message() {
    await withDaemon(['--no-auth'], async (url) => {
      const ws = await open(url);
      const pad = 'z'.repeat(300000);
      const reply = nextMessage(ws);
      // ws fragments when asked; the server must reassemble.
      const text = JSON.stringify({ jsonrpc: '2.0', id: 'big', method: 'nope', params: { pad } });
      ws.send(text.slice(0, 100000), { fin: false });
      ws.send(text.slice(100000), { fin: true });
      const r = await reply;
      assert.strictEqual(r.id, 'big');
      assert.strictEqual(r.error.code, -32601);
      ws.terminate();
    });
  },

  async ws_auth_required_closes_1008() {
    await withDaemon(['--token', 'tok'], async (url) => {
      const ws = await open(url);
      const reply = nextMessage(ws);
      const closed = new Promise((resolve) => ws.once('close', (code) => resolve(code)));
      ws.send(JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'host.agents' }));
      assert.strictEqual((await reply).error.code, -32001);
      assert.strictEqual(await closed, 1008);
    });
  },

  // A local client reads the token where the README says, from the well-known token directory
  // (PROTOCOL.md §9); both minted files are gone once the daemon has shut down (case 49).
  async ws_client_reads_the_minted_token() {
    const d = startDaemon(['--listen', '127.0.0.1:0']);
    await d.ready;
    try {
      const dir = path.join(d.runtimeDir, 'ai.parslee.car');
      assert.ok(d.stderr().includes(`auth token file: ${path.join(dir, 'auth-token')}\n`), d.stderr());
      assert.ok(d.stderr().includes(`host token file: ${path.join(dir, 'host-token')}\n`), d.stderr());
      const token = fs.readFileSync(path.join(dir, 'auth-token'), 'utf8').trim();
      const hostToken = fs.readFileSync(path.join(dir, 'host-token'), 'utf8').trim();
      assert.match(token, /^[A-Za-z0-9_-]{43}$/);
      const ws = await open(d.listening[0]);
      let reply = nextMessage(ws);
      ws.send(JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'session.auth', params: { token } }));
      assert.deepStrictEqual((await reply).result, { ok: true, auth_enabled: true });
      reply = nextMessage(ws);
      ws.send(JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'session.auth', params: { host_token: hostToken } }));
      assert.strictEqual((await reply).result.role, 'host');
      // Check the files before the exit handler clears the runtime directory.
      const gone = new Promise((resolve) => d.child.once('exit', (code) => resolve({
        code, left: fs.existsSync(path.join(dir, 'auth-token')) || fs.existsSync(path.join(dir, 'host-token')),
      })));
      d.child.kill('SIGTERM');
      const { code, left } = await gone;
      assert.strictEqual(code, 0);
      assert.strictEqual(left, false);
    } finally {
      if (d.child.exitCode === null) d.child.kill('SIGKILL');
    }
  },

  async ws_origin_allowlist() {
    await withDaemon(['--no-auth', '--allow-origin', 'http://good.example'], async (url) => {
      await assert.rejects(open(url, { origin: 'http://bad.example' }), /HTTP 403/);
      const ws = await open(url, { origin: 'http://good.example' });
      ws.terminate();
    });
  },

  async ws_sigterm_close_1001() {
    const d = startDaemon(['--listen', '127.0.0.1:0', '--no-auth']);
    await d.ready;
    const ws = await open(d.listening[0]);
    const closed = new Promise((resolve) => ws.once('close', (code) => resolve(code)));
    d.child.kill('SIGTERM');
    assert.strictEqual(await closed, 1001);
    assert.strictEqual(await d.exited, 0);
  },

  async wscat_command_line_client() {
    await withDaemon(['--no-auth'], async (url) => {
      const wscat = path.join(__dirname, 'node_modules', '.bin', 'wscat');
      const request = JSON.stringify({ jsonrpc: '2.0', id: 'w', method: 'server.handshake', params: { protocol_version: 2 } });
      const out = await new Promise((resolve, reject) => {
        execFile(wscat, ['-c', url, '-x', request, '-w', '1'], { timeout: 15000 }, (err, stdout) => {
          if (err) reject(err); else resolve(stdout);
        });
      });
      const reply = JSON.parse(out.trim().split('\n').pop());
      assert.strictEqual(reply.id, 'w');
      assert.strictEqual(reply.result.protocol_version, 2);
    });
  },
};

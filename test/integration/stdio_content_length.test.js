// car-daemon --stdio --stdio-framing content-length driven by vscode-jsonrpc (the LSP framing
// library) as a real third-party client (PROTOCOL.md §1; acceptance 1, 4, 44).
'use strict';
const assert = require('assert');
const rpc = require('vscode-jsonrpc/node');
const { startDaemon } = require('./daemon');

async function withConnection(args, fn) {
  const d = startDaemon(['--stdio', '--stdio-framing', 'content-length', ...args]);
  await d.ready;
  const connection = rpc.createMessageConnection(
    new rpc.StreamMessageReader(d.child.stdout), new rpc.StreamMessageWriter(d.child.stdin));
  connection.listen();
  try {
    await fn(connection, d);
  } finally {
    connection.dispose();
    if (d.child.exitCode === null) d.child.kill('SIGKILL');
  }
}

module.exports = {
  async handshake_round_trip() {
    await withConnection(['--no-auth'], async (c) => {
      const result = await c.sendRequest('server.handshake', { protocol_version: 2 });
      assert.strictEqual(result.protocol_version, 2);
      assert.strictEqual(typeof result.server_version, 'string');
    });
  },

  async errors_keep_code_and_message() {
    await withConnection(['--no-auth'], async (c) => {
      await assert.rejects(c.sendRequest('no.such', {}), (e) => {
        assert.strictEqual(e.code, -32601);
        assert.strictEqual(e.message, 'method not found: no.such');
        return true;
      });
      // -32006 names the version it got (JSON text; "none" when missing), PROTOCOL.md §2.
      await assert.rejects(c.sendRequest('server.handshake', { protocol_version: 7 }),
        (e) => e.code === -32006 && e.message === 'protocol version mismatch: expected 2, got 7');
      await assert.rejects(c.sendRequest('server.handshake', {}),
        (e) => e.code === -32006 && e.message === 'protocol version mismatch: expected 2, got none');
      await assert.rejects(c.sendRequest('server.handshake', { protocol_version: '2' }),
        (e) => e.code === -32006 && e.message === 'protocol version mismatch: expected 2, got "2"');
    });
  },

  async many_concurrent_requests() {
    await withConnection(['--no-auth'], async (c) => {
      const all = [];
      for (let i = 0; i < 200; i++) all.push(c.sendRequest('server.handshake', { protocol_version: 2 }));
      const results = await Promise.all(all);
      assert.strictEqual(results.length, 200);
      for (const r of results) assert.strictEqual(r.protocol_version, 2);
    });
  },

  async auth_flow() {
    await withConnection(['--token', 'tok'], async (c) => {
      await assert.rejects(c.sendRequest('session.auth', { token: 'bad' }),
        (e) => e.code === -32603 && e.message === 'auth failed: token mismatch');
      const ok = await c.sendRequest('session.auth', { token: 'tok' });
      assert.deepStrictEqual(ok, { ok: true, auth_enabled: true });
      // memory_namespace is echoed when given (PROTOCOL.md §3).
      const ns = await c.sendRequest('session.auth', { token: 'tok', memory_namespace: 'proj-1' });
      assert.deepStrictEqual(ns, { ok: true, auth_enabled: true, memory_namespace: 'proj-1' });
    });
  },

  async eof_flushes_and_exits_zero() {
    const d = startDaemon(['--stdio', '--stdio-framing', 'content-length', '--no-auth']);
    await d.ready;
    const reader = new rpc.StreamMessageReader(d.child.stdout);
    const writer = new rpc.StreamMessageWriter(d.child.stdin);
    const ids = new Set();
    reader.listen((msg) => ids.add(msg.id));
    for (let i = 0; i < 50; i++) {
      await writer.write({ jsonrpc: '2.0', id: i, method: 'server.handshake', params: { protocol_version: 2 } });
    }
    d.child.stdin.end();
    const code = await d.exited;
    assert.strictEqual(code, 0);
    await new Promise((r) => setTimeout(r, 50));
    assert.strictEqual(ids.size, 50);
  },

  async malformed_header_block_gets_parse_error() {
    const d = startDaemon(['--stdio', '--stdio-framing', 'content-length', '--no-auth']);
    await d.ready;
    const reader = new rpc.StreamMessageReader(d.child.stdout);
    const got = [];
    reader.listen((msg) => got.push(msg));
    d.child.stdin.write('Content-Length: abc\r\n\r\n');
    const body = JSON.stringify({ jsonrpc: '2.0', id: 'after', method: 'server.handshake', params: { protocol_version: 2 } });
    d.child.stdin.write(`Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
    d.child.stdin.end();
    assert.strictEqual(await d.exited, 0);
    await new Promise((r) => setTimeout(r, 50));
    assert.strictEqual(got[0].error.code, -32700);
    assert.strictEqual(got[0].id, null);
    assert.strictEqual(got[1].id, 'after');
  },
};

// Interop with npm `ws` over TLS (wss://, `--tls-cert`/`--tls-key`; docs/OPERATIONS.md "TLS
// (wss://)"): against a self-signed certificate the test makes with the `openssl` command, `ws`
// verifies the daemon, authenticates and calls; a 1 MiB+ message goes both ways; a `ws` client
// that does not trust the certificate is refused while a trusting one is served. The Python
// client's tests are test_tls.py.
'use strict';
const assert = require('assert');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { execFileSync } = require('child_process');
const WebSocket = require('ws');
const { startDaemon } = require('./daemon');

const TOKEN = 'tls-node-token';

// A self-signed ECDSA P-256 certificate for localhost and 127.0.0.1 and its key, in a fresh
// directory. Throws (the test fails, it is not skipped) when openssl is missing.
function makeCertificate() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'car-node-tls-'));
  const cert = path.join(dir, 'server.crt');
  const key = path.join(dir, 'server.key');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256',
    '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=localhost',
    '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1'], { stdio: 'pipe', timeout: 30000 });
  return { dir, cert, key, ca: fs.readFileSync(cert) };
}

function open(url, options) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { maxPayload: 64 * 1024 * 1024, ...options });
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
    ws.once('unexpected-response', (req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
  });
}

// Sends a request and resolves with the reply of the same id.
function call(ws, id, method, params) {
  return new Promise((resolve) => {
    const onMessage = (data) => {
      const msg = JSON.parse(data.toString());
      if (msg.id !== id) return;
      ws.off('message', onMessage);
      resolve(msg);
    };
    ws.on('message', onMessage);
    ws.send(JSON.stringify({ jsonrpc: '2.0', id, method, params }));
  });
}

async function withTlsDaemon(fn) {
  const certs = makeCertificate();
  const d = startDaemon(['--listen', '127.0.0.1:0', '--tls-cert', certs.cert, '--tls-key', certs.key,
    '--token', TOKEN, '--no-host-token']);
  try {
    await d.ready;
    const url = d.listening.find((l) => l.startsWith('wss://'));
    assert.ok(url, `no wss:// listener in ${d.listening}`);
    await fn(url, certs, d);  // 127.0.0.1: in the certificate, and no name lookup
  } finally {
    if (d.child.exitCode === null) d.child.kill('SIGKILL');
    fs.rmSync(certs.dir, { recursive: true, force: true });
  }
}

module.exports = {
  async wss_node_ws_verifies_authenticates_and_calls() {
    await withTlsDaemon(async (url, certs) => {
      const ws = await open(url, { ca: certs.ca });
      assert.strictEqual(ws._socket.getProtocol(), 'TLSv1.3');
      assert.strictEqual(ws._socket.authorized, true);
      const auth = await call(ws, 1, 'session.auth', { token: TOKEN });
      assert.deepStrictEqual(auth.result, { ok: true, auth_enabled: true });
      const agents = await call(ws, 2, 'host.agents', {});
      assert.ok(agents.result, JSON.stringify(agents));
      ws.close();
    });
  },

  async wss_node_ws_1mib_both_ways() {
    await withTlsDaemon(async (url, certs) => {
      const ws = await open(url, { ca: certs.ca });
      assert.strictEqual((await call(ws, 1, 'session.auth', { token: TOKEN })).result.ok, true);
      const started = await call(ws, 2, 'runs.start', { intent: 'tls', agent_id: 'agent-node' });
      const runId = started.result.run_id;
      // 70 turns of 16 000 bytes (under the per-string cut): over 1 MiB in, the same back out.
      const outputs = [];
      for (let i = 0; i < 70; i += 1) outputs.push(String.fromCharCode(97 + (i % 26)).repeat(16000));
      const turns = outputs.map((output, i) => ({ prompt: `p${i}`, output }));
      assert.ok(JSON.stringify(turns).length > 1 << 20);
      const recorded = await call(ws, 3, 'runs.record_turns', { run_id: runId, turns });
      assert.strictEqual(recorded.result.ok, true, JSON.stringify(recorded).slice(0, 300));
      const trace = await call(ws, 4, 'runs.get_trace', { run_id: runId });
      const back = trace.result.records.filter((r) => r.record === 'turn').map((r) => r.output);
      assert.deepStrictEqual(back, outputs);
      ws.close();
    });
  },

  async wss_node_ws_untrusted_certificate_is_refused_others_served() {
    await withTlsDaemon(async (url, certs) => {
      // Node's default CAs never signed the test's certificate.
      await assert.rejects(open(url), /self[- ]signed|unable to verify|certificate/i);
      const ws = await open(url, { ca: certs.ca });
      assert.strictEqual((await call(ws, 1, 'session.auth', { token: TOKEN })).result.ok, true);
      ws.close();
    });
  },
};

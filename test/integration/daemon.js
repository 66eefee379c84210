// Starting car-daemon from Node tests: waits for its `listening ...` lines on stderr.
'use strict';
const { spawn } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const ROOT = path.resolve(__dirname, '..', '..');
const DAEMON = process.env.CAR_DAEMON || path.join(ROOT, 'build', 'examples', 'car-daemon', 'car-daemon');

// The variables car-daemon reads (PROTOCOL.md §9): whatever the calling shell has set must not
// leak into the daemons.
const CAR_VARIABLES = ['CAR_AUTH_TOKEN', 'CAR_NO_AUTH', 'CAR_NO_APPROVALS', 'CAR_TOOL_TIMEOUT', 'CAR_AGENT_ID'];

function startDaemon(args, { listeners = 1 } = {}) {
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'car-node-'));
  // A private XDG_RUNTIME_DIR: a daemon that mints tokens writes them there, never into the real
  // runtime or home directory, and two daemons never contend for one token directory.
  const runtimeDir = fs.mkdtempSync(path.join(os.tmpdir(), 'car-node-run-'));
  const env = { ...process.env, XDG_RUNTIME_DIR: runtimeDir };
  for (const name of CAR_VARIABLES) delete env[name];
  const child = spawn(DAEMON, ['--state-dir', stateDir, ...args], { stdio: ['pipe', 'pipe', 'pipe'], env });
  const listening = [];
  let stderr = '';
  const ready = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`daemon did not start: ${stderr}`)), 10000);
    child.stderr.on('data', (chunk) => {
      stderr += chunk.toString();
      for (const line of stderr.split('\n')) {
        const m = /^listening (.*)$/.exec(line);
        if (m && !listening.includes(m[1])) listening.push(m[1]);
      }
      if (listening.length >= listeners) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.on('exit', (code) => reject(new Error(`daemon exited ${code}: ${stderr}`)));
  });
  const exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
  // Whatever a killed daemon left. On 'close', which comes after 'exit', so a test's own 'exit'
  // handler still sees the directory as the daemon left it.
  child.on('close', () => fs.rmSync(runtimeDir, { recursive: true, force: true }));
  return { child, ready, exited, listening, stateDir, runtimeDir, stderr: () => stderr };
}

module.exports = { startDaemon, DAEMON };

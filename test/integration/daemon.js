// Starting car-daemon from Node tests: waits for its `listening ...` lines on stderr.
'use strict';
const { spawn } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const ROOT = path.resolve(__dirname, '..', '..');
const DAEMON = process.env.CAR_DAEMON || path.join(ROOT, 'build', 'examples', 'car-daemon', 'car-daemon');

function startDaemon(args, { listeners = 1 } = {}) {
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'car-node-'));
  const child = spawn(DAEMON, ['--state-dir', stateDir, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
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
  return { child, ready, exited, listening, stateDir, stderr: () => stderr };
}

module.exports = { startDaemon, DAEMON };

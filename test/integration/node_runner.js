#!/usr/bin/env node
// Runs the exported tests of every *.test.js here (or the files given), one at a time with a time
// limit, and prints one line `N passed, N failed`. Exits non-zero when anything failed.
'use strict';
const fs = require('fs');
const path = require('path');

const LIMIT_MS = Number(process.env.CAR_TEST_TIME_LIMIT || 120) * 1000;

async function main() {
  const files = process.argv.slice(2).length
    ? process.argv.slice(2).map((f) => path.resolve(f))
    : fs.readdirSync(__dirname).filter((f) => f.endsWith('.test.js')).sort()
        .map((f) => path.join(__dirname, f));
  let passed = 0;
  let failed = 0;
  for (const file of files) {
    const tests = require(file);
    for (const [name, fn] of Object.entries(tests)) {
      const label = `${path.basename(file)}::${name}`;
      const start = Date.now();
      let timer;
      try {
        await Promise.race([
          fn(),
          new Promise((_, reject) => {
            timer = setTimeout(() => reject(new Error(`timed out after ${LIMIT_MS} ms`)), LIMIT_MS);
          }),
        ]);
        passed += 1;
        console.log(`PASS ${label} (${Date.now() - start} ms)`);
      } catch (err) {
        failed += 1;
        console.log(`FAIL ${label} (${Date.now() - start} ms)\n${err && err.stack ? err.stack : err}`);
      } finally {
        clearTimeout(timer);
      }
    }
  }
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed || passed === 0 ? 1 : 0);
}

main();

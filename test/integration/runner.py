#!/usr/bin/python3
"""Runs every test_* function of the given test_*.py modules (default: all in this folder), each
in its own thread with a time limit, and prints one line `N passed, N failed, N skipped` at the
end. A test that raises unittest.SkipTest (a component this machine or build lacks, outside CI)
is counted as skipped, with its reason. Exit status is non-zero when anything failed, or when
nothing passed and nothing was skipped."""

import importlib.util
import os
import sys
import threading
import time
import traceback
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
TIME_LIMIT = float(os.environ.get("CAR_TEST_TIME_LIMIT", "120"))


def load(path):
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_one(fn):
    outcome = {}

    def target():
        try:
            fn()
            outcome["ok"] = True
        except unittest.SkipTest as skip:
            outcome["skip"] = str(skip) or "skipped"
        except BaseException:  # noqa: BLE001 - report every failure
            outcome["error"] = traceback.format_exc()

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(TIME_LIMIT)
    if t.is_alive():
        return f"timed out after {TIME_LIMIT:.0f} s", None
    if "skip" in outcome:
        return None, outcome["skip"]
    return (None if outcome.get("ok") else outcome.get("error", "unknown failure")), None


def main(argv):
    paths = argv[1:] or sorted(
        os.path.join(HERE, f) for f in os.listdir(HERE) if f.startswith("test_") and f.endswith(".py"))
    only = os.environ.get("CAR_TEST_FILTER")
    passed = failed = skipped = 0
    for path in paths:
        module = load(path)
        for name in sorted(n for n in dir(module) if n.startswith("test_")):
            if only and only not in name:
                continue
            fn = getattr(module, name)
            start = time.time()
            error, skip = run_one(fn)
            took = time.time() - start
            label = f"{os.path.basename(path)}::{name}"
            if skip is not None:
                skipped += 1
                print(f"SKIP {label}: {skip}", flush=True)
            elif error is None:
                passed += 1
                print(f"PASS {label} ({took:.2f}s)", flush=True)
            else:
                failed += 1
                print(f"FAIL {label} ({took:.2f}s)\n{error}", flush=True)
    print(f"{passed} passed, {failed} failed, {skipped} skipped", flush=True)
    return 1 if failed or (passed == 0 and skipped == 0) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

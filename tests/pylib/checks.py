"""tests/pylib/checks.py — the check loop of the Python end-to-end tests (tests/grpc,
tests/deploy): every check runs whatever the others did, one line each ("ok   NAME  T s" or
"FAIL NAME: why"); the caller prints the closing "N passed, N failed" after its own clean-up."""

import time


def run_checks(checks):
    """Runs each check (a function that raises on failure); returns (passed, failed)."""
    passed = failed = 0
    for check in checks:
        t0 = time.time()
        try:
            check()
            passed += 1
            print("ok   %-40s %5.1f s" % (check.__name__, time.time() - t0), flush=True)
        except Exception as e:  # noqa: BLE001 -- report every check, whatever broke
            failed += 1
            print("FAIL %s: %s: %s" % (check.__name__, type(e).__name__, e), flush=True)
    return passed, failed

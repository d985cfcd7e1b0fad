# tests/cli/testlib.sh — sourced by the CLI tests: pass/fail counting and the final verdict.
# The sourcing script sets `set -uo pipefail` and calls `finish` last.
passed=0
failed=0
tmp=${TEST_TMPDIR:-$(mktemp -d)}

check() { # name, condition result
    if [ "$2" -eq 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAIL: $1"; fi
}

finish() {
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ]
}

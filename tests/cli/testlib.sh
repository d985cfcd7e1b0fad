# tests/cli/testlib.sh — sourced by the CLI tests: pass/fail counting and the final verdict.
# The sourcing script sets `set -uo pipefail` and calls `finish` last.
passed=0
failed=0
tmp=${TEST_TMPDIR:-$(mktemp -d)}

check() { # name, condition result
    if [ "$2" -eq 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAIL: $1"; fi
}

# Without DECOSERVE_MODEL the real-model checks named by $1 are skipped, or counted as a failure
# with DECOSERVE_REQUIRE_MODEL=1 (what CI sets), so a green run cannot hide that they never ran.
model_missing() { # what the skipped checks are
    if [ "${DECOSERVE_REQUIRE_MODEL:-}" = 1 ]; then
        check "DECOSERVE_REQUIRE_MODEL=1 but DECOSERVE_MODEL is not set: $1 cannot run" 1
    else
        echo "DECOSERVE_MODEL is not set: $1 skipped"
    fi
}

finish() {
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ]
}

#!/usr/bin/env bash
# smoke_test.sh proves the VM harness itself: dm-thin works in the guest,
# exit statuses and timeouts reach the host, and a dmtest.Require test
# passes in the VM but skips on this host. Takes about a minute.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here/../.."
fails=0
check() { # check NAME WANT GOT
	if [[ $2 == "$3" ]]; then echo "smoke: ok   $1"; else echo "smoke: FAIL $1 (want $2, got $3)"; fails=$((fails + 1)); fi
}
out=$(mktemp)
trap 'rm -f "$out"' EXIT

"$here/run.sh" --timeout 300 -- sh "$here/guest-smoke.sh" 2>&1 | tee "$out"
check "thin-pool on loop devices in the guest" 0 "${PIPESTATUS[0]}"
grep -q 'guest smoke: dm-thin OK' "$out"; check "guest smoke output" 0 $?

"$here/run.sh" --timeout 300 -- sh -c 'exit 7'
check "guest exit status reaches the host" 7 $?

FOO='it'\''s "quoted" $HOME' FLYIO_VM_ENV=FOO "$here/run.sh" --timeout 300 -- sh -c '[ "$FOO" = "it'\''s \"quoted\" \$HOME" ] && [ "$(pwd)" = "'"$PWD"'" ]'
check "environment and working directory pass through" 0 $?

"$here/run.sh" --timeout 20 -- sleep 600 2>&1 | tee "$out"
check "hung guest is killed" 124 "${PIPESTATUS[0]}"
grep -q 'VM timed out after 20 s' "$out"; check "timeout message" 0 $?

"$here/gotest.sh" ./test/vm/ 2>&1 | tee "$out"
check "dmtest.Require test runs in the VM" 0 "${PIPESTATUS[0]}"
grep -q -- '--- PASS: TestDeviceMapperReachable' "$out"; check "test PASSES in the VM" 0 $?

go test -v -count=1 ./test/vm/ 2>&1 | tee "$out"
grep -q -- '--- SKIP: TestDeviceMapperReachable' "$out"; check "test SKIPS on the host" 0 $?

((fails == 0)) && echo "smoke: all checks passed" || echo "smoke: $fails check(s) failed"
exit $((fails > 0))

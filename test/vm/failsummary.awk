# failsummary.awk reads `go test -v` output and prints, for each failed
# test, the last messages the test printed itself (lines "file.go:N: ..."
# at any depth) before its first log dump ("===== NAME log =====",
# "... output:"): that is where t.Fatal's message sits, usually hundreds
# of lines above the FAIL line once the harness has dumped the logs of
# containerd and the daemon. Messages are cut to 300 characters.
function flush(name,   i, from) {
	from = nmsg > keep ? nmsg - keep + 1 : 1
	printf "--- %s: its last %d messages before the log dumps:\n", name, nmsg - from + 1
	for (i = from; i <= nmsg; i++) print "    " substr(msg[i], 1, 300)
}
BEGIN { keep = 8 }
/^=== RUN / { if (depth == 0) { nmsg = 0; dumping = 0 } }
/^[ ]+[A-Za-z0-9_.-]+\.go:[0-9]+: / {
	if ($0 ~ /=====|output:$/) dumping = 1
	if (!dumping) { sub(/^[ ]+/, ""); msg[++nmsg] = $0 }
	next
}
/^--- FAIL: / { flush($3) ; nmsg = 0; dumping = 0 }

# Included by the top-level Makefile; paths are relative to the repository
# root, which is where make runs.
#
#   make bench [BENCH_ARGS="-n 9 -concurrency 64"]
#
# Compares the flyio snapshotter with containerd's devmapper snapshotter
# on identical dm-thin pools (in the test VM when the host has no
# dm-thin) and prints a table of medians. See docs/benchmarks.md.

BENCH_ARGS ?=

.PHONY: bench
bench:
	bench/run.sh $(BENCH_ARGS)

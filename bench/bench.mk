# Included by the top-level Makefile; paths are relative to the repository
# root, which is where make runs.
#
#   make bench [BENCH_ARGS="-n 9 -concurrency 64"]
#
# Compares the flyio snapshotter with containerd's devmapper snapshotter
# on identical dm-thin pools (in the test VM when the host has no
# dm-thin) and prints a table of medians. See docs/benchmarks.md.

BENCH_ARGS ?=
# S3 fill benchmark (bench/s3bench), e.g. S3BENCH_ARGS="-size 536870912 -n 5".
S3BENCH_ARGS ?=
# Extractor peak RSS and time on a generated 1M-entry archive against GNU
# tar (bench/extractmem), e.g. EXTRACTMEM_ARGS="-entries 200000 -dir /var/tmp".
EXTRACTMEM_ARGS ?=
# Extractor vs GNU tar and containerd on a Debian rootfs (bench/rootfsbench,
# on the host), e.g. ROOTFSBENCH_ARGS="-n 9".
ROOTFSBENCH_ARGS ?=
# Lazy start against a full import, with real containerd (bench/lazybench,
# in the test VM), e.g. LAZYBENCH_ARGS="-size 104857600 -n 5".
LAZYBENCH_ARGS ?=

.PHONY: bench bench-s3 bench-extractmem bench-extract bench-lazy
bench:
	bench/run.sh $(BENCH_ARGS)
	bench/s3bench/run.sh $(S3BENCH_ARGS)
	bench/rootfsbench/run.sh $(ROOTFSBENCH_ARGS)
	bench/lazybench/run.sh $(LAZYBENCH_ARGS)
	$(MAKE) bench-extractmem

bench-extractmem:
	$(GO) run ./bench/extractmem $(EXTRACTMEM_ARGS)

bench-s3:
	bench/s3bench/run.sh $(S3BENCH_ARGS)

bench-extract:
	bench/rootfsbench/run.sh $(ROOTFSBENCH_ARGS)

bench-lazy:
	bench/lazybench/run.sh $(LAZYBENCH_ARGS)

# Benchmarks (bench/README.md). Everything else: ./run (serve, test, bench, tessera).
SIZE ?= small
BENCH_ARGS ?=

.PHONY: help bench bench-tessera bench-smoke

help:
	@echo "make bench          Tessera (embedded) vs Orthanc, SIZE=$(SIZE) (tiny|small|medium|large); root"
	@echo "make bench-tessera  Tessera (embedded) alone, SIZE=$(SIZE)"
	@echo "make bench-smoke    the benchmark's smoke test (tests/e2e/test_bench_smoke.py)"
	@echo "extra options: BENCH_ARGS='--seed 1 --output results.json'"

bench:
	bench/compare-orthanc.sh --size $(SIZE) $(BENCH_ARGS)

bench-tessera:
	./run bench run --size $(SIZE) $(BENCH_ARGS)

bench-smoke:
	./run tessera --help >/dev/null
	.venv/bin/pytest tests/e2e/test_bench_smoke.py -q

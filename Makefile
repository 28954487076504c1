# The two commands: `make demo` runs the main job on the embedded default,
# `make test` runs the whole suite. Both install what they need first.
PYTHON := .venv/bin/python

.PHONY: setup demo test bench protos clean

setup: .venv/.installed

.venv/.installed: pyproject.toml scripts/bootstrap.sh
	scripts/bootstrap.sh

demo: setup
	$(PYTHON) scripts/demo.py

# Three workers on two cores: most tests wait on engine processes and servers, not on the CPU.
# Each worker starts its own session fixtures (S3 server, PostgreSQL, btrfs loop device).
# worksteal: an idle worker takes queued tests from a busy one, so no slow tail on one worker.
TEST_WORKERS ?= 3

test: setup
	$(PYTHON) -m pytest -q -rs --durations=30 -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

bench: setup
	$(PYTHON) bench/bench.py $(BENCH_ARGS)

protos: setup
	$(PYTHON) scripts/gen_protos.py

clean:
	rm -rf .venv build *.egg-info

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

# Bytecode caches on for the run, whatever PYTHONDONTWRITEBYTECODE says (some machines set it):
# the suite starts the agent, a Python process, several hundred times, and without the caches
# every start compiles the agent's modules again (~0.3 s of CPU each), every xdist worker
# rewrites and compiles every test module again, and so does every hub CLI the tests run.
# The caches (__pycache__/) are ignored by git.
test: setup
	env -u PYTHONDONTWRITEBYTECODE $(PYTHON) -m pytest -q -rs --durations=30 -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

bench: setup
	$(PYTHON) bench/bench.py $(BENCH_ARGS)

protos: setup
	$(PYTHON) scripts/gen_protos.py

clean:
	rm -rf .venv build *.egg-info

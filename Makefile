# The two commands: `make demo` runs the main job on the embedded default,
# `make test` runs the whole suite. Both install what they need first.
PYTHON := .venv/bin/python

.PHONY: setup demo test bench protos clean

setup: .venv/.installed

.venv/.installed: pyproject.toml scripts/bootstrap.sh
	scripts/bootstrap.sh

demo: setup
	$(PYTHON) scripts/demo.py

test: setup
	$(PYTHON) -m pytest -q -rs $(PYTEST_ARGS)

bench: setup
	$(PYTHON) bench/bench.py $(BENCH_ARGS)

protos: setup
	$(PYTHON) scripts/gen_protos.py

clean:
	rm -rf .venv build *.egg-info

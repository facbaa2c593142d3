# Two commands for a newcomer: `make demo` and `make test`; each sets itself up.
SHELL := /bin/bash
VENV := .venv
ENV := source $(VENV)/camfusion.env
PYTEST_ARGS ?=

.PHONY: setup test demo bench clean
setup:
	@bash scripts/setup.sh

test: setup
	@$(ENV) && $(VENV)/bin/python -m pytest $(PYTEST_ARGS)

demo: setup
	@$(ENV) && $(VENV)/bin/python -m camfusion_ros.demo

bench: setup
	@$(ENV) && $(VENV)/bin/camfusion-bench --suite quick --out bench/results/quick.json

clean:
	rm -rf build $(VENV)

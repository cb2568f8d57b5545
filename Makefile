# The two commands of the README:
#   make demo   set up .venv and run the whole demo on the synthetic set
#   make test   set up .venv and run the test suite
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: demo test install deploy report lint

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[test,slurm]'
	touch $@

# ONNX export, ONNX Runtime and INT8 (docs/deploy.md): the tests need them, the demo not
deploy: $(VENV)/.deploy

$(VENV)/.deploy: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[test,slurm,deploy]'
	touch $@

demo: install
	$(BIN)/snakemake --cores all --configfile config/demo.yaml

report: install
	$(BIN)/snakemake --cores all --configfile config/demo.yaml --report reports/report.html

test: install deploy
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check calex_steps tests bench
	$(BIN)/ruff format --check calex_steps tests bench
	$(BIN)/snakefmt --check Snakefile rules
	$(BIN)/snakemake --lint --configfile config/demo.yaml

# The two commands of the README:
#   make demo   set up .venv and run the whole demo on the synthetic set
#   make test   set up .venv and run the test suite
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: demo test install deploy report lint

install: $(VENV)/.installed

# pip byte-compiles one file at a time; compiling afterwards on every core is faster
# (every stage imports from the compiled files: nothing recompiles at run time)
COMPILE := $(BIN)/python -c "import compileall, sys; compileall.compile_dir(sys.prefix + '/lib', quiet=2, workers=0)"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --no-compile -e '.[test,slurm]'
	$(COMPILE)
	touch $@

# ONNX export, ONNX Runtime and INT8 (docs/deploy.md): the tests need them, the demo not
deploy: $(VENV)/.deploy

$(VENV)/.deploy: $(VENV)/.installed
	$(BIN)/pip install --quiet --no-compile -e '.[test,slurm,deploy]'
	$(COMPILE)
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

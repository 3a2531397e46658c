# Two commands: `make test` and `make demo`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo install clean sword

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip "setuptools>=68" wheel
	# CPU build of torch, already on disk on the project's machines: no download.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# The Debian SWORD modules that hold the bundled Bible corpus (needs root, or prints what to install).
sword:
	@$(PY) -m vanilla_transformer.training.bible --ensure-packages

test: install sword
	$(VENV)/bin/pytest -q tests

demo: install sword
	$(PY) -m vanilla_transformer.training.demo

clean:
	rm -rf $(VENV) build *.egg-info demo_output

# `make demo` and `make test` work from a fresh clone: they create .venv and install everything.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-slow bench docs clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned to the local CPU wheel (a newer torch pulls GB of CUDA packages)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[all,test]'
	# masc-metric is the published reference for masked similarity; it needs no torchvision at run time
	$(PY) -m pip install -q --no-deps masc-metric==0.3.0
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/vptt demo

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

test-slow: $(STAMP)
	# exit code 5 means no test is marked slow: not a failure
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m slow; rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 5 ]

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_personalize.py

docs: $(STAMP)
	# the settings reference in docs/configuration.md is generated from VPTTSettings
	$(PY) -c "import pathlib, vptt.core.settings as s; p = pathlib.Path('docs/configuration.md'); p.write_text(s.fill_settings_table(p.read_text()))"

clean:
	rm -rf $(VENV) build *.egg-info

# One place that knows how to set up, test and run octa-tui from a fresh checkout.
# `make demo` and `make test` are the README's two commands; .ci/run calls `make test`.
# `make test-fast` is the inner loop: every test but those marked slow (real training runs,
# long-running processes); `make test` stays complete.

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test test-fast lint demo bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	# The pinned CPU torch first: a bare range would pull several GB of CUDA packages.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[test]"
	# Optional: the coverage-guided fuzzer for the control server; its test skips without it.
	$(PY) -m pip install --quiet atheris 2>/dev/null || echo "atheris did not install; its fuzz test will be skipped"
	touch $(STAMP)

lint: setup
	$(PY) -m ruff check .

test: lint
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: lint
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

demo: setup
	$(VENV)/bin/octa-tui demo $(ARGS)

bench: setup
	$(PY) -m bench $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info

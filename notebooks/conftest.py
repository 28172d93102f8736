"""``pytest --nbmake notebooks/``: the series in CI's shrunk form, one shared cache.

Unless already set: ``MMMIXLAB_SMOKE=1`` (every parameters cell reads it and shrinks the world
and the epochs), one temporary ``MMMIXLAB_CACHE`` for the whole series (so each notebook proves
it reuses what earlier ones built; set it yourself to keep it between sessions), figures into a
temporary folder, and no network. nbmake runs each notebook in a fresh kernel with this
folder as its working directory; ``test_series_outputs.py`` then checks what the series left.
"""

import os
import tempfile

RAN: set = set()  # notebooks that passed in this session (config.mmmixlab_ran)


def pytest_configure(config):
    tmp = tempfile.mkdtemp(prefix="mmmixlab-nb-")
    defaults = {"MMMIXLAB_SMOKE": "1", "MMMIXLAB_CACHE": os.path.join(tmp, "cache"),
                "MMMIXLAB_FIGURES": os.path.join(tmp, "figures"), "HF_HUB_OFFLINE": "1",
                # idle OpenMP threads sleep instead of spinning (10x on a busy 2-core machine)
                "OMP_WAIT_POLICY": "PASSIVE"}
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
    config.mmmixlab_fresh_cache = os.environ["MMMIXLAB_CACHE"] == defaults["MMMIXLAB_CACHE"]
    config.mmmixlab_ran = RAN


def pytest_runtest_logreport(report):
    if report.when == "call" and report.passed and report.nodeid.endswith(".ipynb"):
        RAN.add(report.nodeid.split("::")[0].rsplit("/", 1)[-1])

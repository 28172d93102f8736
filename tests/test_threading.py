"""Importing mmmixlab first makes torch's idle OpenMP workers sleep (a plain process gets it)."""

import os
import subprocess
import sys


def _policy(code: str, **env) -> str:
    clean = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code + "; import os; "
                          "print(os.environ.get('OMP_WAIT_POLICY'))"],
                         env={**clean, **env}, capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def test_import_sets_passive_wait_policy_before_torch_loads():
    assert _policy("import mmmixlab; import torch") == "PASSIVE"


def test_a_users_policy_and_an_already_loaded_torch_are_left_alone():
    assert _policy("import mmmixlab", OMP_WAIT_POLICY="ACTIVE") == "ACTIVE"
    assert _policy("import torch; import mmmixlab") == "None"  # too late to matter: not set

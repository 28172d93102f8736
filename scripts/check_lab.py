"""Open the notebooks in a real JupyterLab in headless Chromium and check what a user sees.

    .venv/bin/python scripts/check_lab.py [--notebook 02_mixing_explorer.ipynb] [--keep]

Needs Debian's ``chromium`` and ``chromium-driver`` (``sudo apt-get install -y chromium
chromium-driver``) and ``pip install selenium``; not part of ``make test`` (a developer's check,
minutes long). It starts ``jupyter lab`` from the venv on a free port (with the venv's
``labconfig/page_config.json`` that ``make install`` writes), opens the notebook, runs all
cells with the series' smoke parameters (``MMMIXLAB_SMOKE=1``, a temporary cache), and checks:

* no "Build Recommended" (or any other) dialog blocks the page;
* every plotly figure fills its output's width (no 700 px default cutting titles);
* no red warning text (stderr output) from the notebook's cells;
* no cell ended in an error.

Prints one line per check and exits 1 when any fails; ``--keep`` leaves a screenshot.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_lab(port: int, env: dict) -> subprocess.Popen:
    venv_bin = Path(sys.executable).parent
    cmd = [str(venv_bin / "jupyter"), "lab", "--no-browser", f"--port={port}", "--allow-root",
           "--ServerApp.token=", "--ServerApp.password=", "--ServerApp.disable_check_xsrf=True",
           "--LabApp.expose_app_in_browser=True", "--ContentsManager.allow_hidden=True",
           f"--ServerApp.root_dir={ROOT / 'notebooks'}"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_http(port: int, timeout: float = 60) -> None:
    import urllib.request

    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/lab", timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"jupyter lab did not answer on port {port} within {timeout:.0f} s")


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1400,1000",
                 f"--user-data-dir={tempfile.mkdtemp(prefix='lab-check-chrome-')}"):
        opts.add_argument(flag)
    driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    return webdriver.Chrome(service=Service(driver), options=opts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--notebook", default="02_mixing_explorer.ipynb")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--keep", action="store_true", help="save a screenshot beside the script")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="lab-check-"))
    env = dict(os.environ, MMMIXLAB_SMOKE="1", MMMIXLAB_CACHE=str(tmp / "cache"),
               MMMIXLAB_FIGURES=str(tmp / "figures"), HF_HUB_OFFLINE="1",
               JUPYTER_RUNTIME_DIR=str(tmp / "runtime"))
    # work on a copy so the committed notebook keeps no outputs
    work = ROOT / "notebooks" / f".lab-check-{args.notebook}"
    shutil.copy(ROOT / "notebooks" / args.notebook, work)
    port = free_port()
    lab = start_lab(port, env)
    failures = []
    try:
        wait_http(port)
        drv = browser()
        try:
            drv.get(f"http://127.0.0.1:{port}/lab/tree/{work.name}")
            t0 = time.time()
            while time.time() - t0 < 60 and not drv.execute_script(
                    "return !!(window.jupyterapp && document.querySelector('.jp-Notebook'))"):
                time.sleep(0.5)
            time.sleep(5)  # dialogs show up shortly after the shell
            dialogs = drv.execute_script(
                "return [...document.querySelectorAll('.jp-Dialog, .jp-toast-message, "
                ".Toastify__toast')].map(d => d.innerText)")
            check(failures, not dialogs, "no dialog or prompt over the page",
                  f"dialogs: {dialogs}")
            drv.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            t0 = time.time()
            while time.time() - t0 < args.timeout:
                busy = drv.execute_script(
                    "return [...document.querySelectorAll('.jp-InputArea-prompt')]"
                    ".some(p => p.innerText.includes('*'))")
                if not busy and time.time() - t0 > 10:
                    break
                time.sleep(2)
            time.sleep(5)  # widgets render after the kernel is idle
            errors = drv.execute_script(
                "return [...document.querySelectorAll('.jp-OutputArea-output')]"
                ".filter(o => o.dataset.mimeType === 'application/vnd.jupyter.stderr'"
                " || o.querySelector('.jp-RenderedText[data-mime-type="
                "\"application/vnd.jupyter.stderr\"]')).map(o => o.innerText.slice(0, 200))")
            check(failures, not errors, "no red warning or error output", f"stderr: {errors}")
            widths = drv.execute_script(
                "return [...document.querySelectorAll('.js-plotly-plot')].map(p => {"
                " const out = p.closest('.jp-OutputArea-output');"
                " return [p.getBoundingClientRect().width,"
                "         out ? out.getBoundingClientRect().width : 0]; })")
            narrow = [w for w in widths if w[1] and w[0] < 0.9 * w[1]]
            check(failures, widths and not narrow,
                  f"{len(widths)} plotly figures fill their outputs",
                  f"figure vs output widths: {narrow or 'no figure rendered'}")
            if args.keep:
                shot = Path(__file__).with_name(f"lab-check-{Path(args.notebook).stem}.png")
                drv.save_screenshot(str(shot))
                print(f"screenshot: {shot}")
        finally:
            drv.quit()
    finally:
        lab.terminate()
        lab.wait(timeout=30)
        work.unlink(missing_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failures else 0


def check(failures: list, ok, what: str, detail: str) -> None:
    print(f"{'ok  ' if ok else 'FAIL'} {what}" + ("" if ok else f": {detail}"), flush=True)
    if not ok:
        failures.append(what)


if __name__ == "__main__":
    sys.exit(main())

"""Open notebooks in a real JupyterLab in headless Chromium and check what a user sees.

    make lab-check                       # 00, 02 and 03 (03 retrained: live curves)
    .venv-lab/bin/python scripts/check_lab.py [--lab-venv .venv] [--keep] \
        [--set 03_stage1_feature_mixing.ipynb:RETRAIN=True] NOTEBOOK ...

Runs in its own environment (``.venv-lab``: selenium only, ``make lab-check`` creates it) and
drives Debian's ``chromium`` + ``chromium-driver`` (``scripts/system-deps.sh lab`` installs
them or prints the command). JupyterLab comes from the project's venv (``--lab-venv``) and runs
isolated from the user's own: copies of the notebooks in a temporary root folder, temporary
workspaces, user settings, config and runtime folders (``--LabApp.workspaces_dir``,
``--LabApp.user_settings_dir``, ``JUPYTER_CONFIG_DIR``, ``JUPYTER_RUNTIME_DIR``), so no
tab of the user's is reopened and none is left behind. The venv's ``page_config.json`` and
``share/jupyter/lab/settings/overrides.json`` (``make install``) apply, as in ``make lab``.

For each notebook, with the series' smoke parameters (``MMMIXLAB_SMOKE=1``, a temporary
cache): run all cells and check

* no dialog over the page, no red (stderr) output, no cell error;
* every plotly figure's drawing (``.main-svg``) fills its output area (printed: inner, outer);
* while a live-curve cell retrains (03 by default: ``RETRAIN = True`` and, in the copy only,
  a 6-epoch stage 1 of 8-shape batches), the curves grow during stage 1: plotted points
  counted in the page every 50 ms, at least two sizes before any stage-2 trace exists;
* after saving and reloading the page with the kernel alive: every widget renders (no "Error
  displaying widget", no "model not found"), every figure comes back non-empty;
* after shutting the kernel down and reloading (a saved notebook opened anew, not re-run): the
  same, from what the notebook stored.

Prints one line per check and exits 1 when any fails; ``--keep`` saves screenshots.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ["00_quickstart.ipynb", "02_mixing_explorer.ipynb", "03_stage1_feature_mixing.ipynb"]
DEFAULT_SET = ["03_stage1_feature_mixing.ipynb:RETRAIN=True"]
# a smoke stage 1 is over in a second: in 03's copy it gets 6 epochs of 8-shape batches, long
# enough to watch the curves grow (the copy only; the cache key changes with it)
LONGER_STAGE1 = ("import mmmixlab.workbench.runs as _runs\n"
                 "_runs.SMOKE_OVERRIDES.update({'train.epochs_stage1': 6, 'train.batch_size': 8})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_lab(lab_venv: Path, port: int, root: Path, tmp: Path, env: dict) -> subprocess.Popen:
    cmd = [str(lab_venv / "bin" / "jupyter"), "lab", "--no-browser", f"--port={port}",
           "--allow-root", "--ServerApp.token=", "--ServerApp.password=",
           "--ServerApp.disable_check_xsrf=True", "--LabApp.expose_app_in_browser=True",
           f"--ServerApp.root_dir={root}", f"--LabApp.workspaces_dir={tmp / 'workspaces'}",
           f"--LabApp.user_settings_dir={tmp / 'settings'}",
           f"--LabApp.app_settings_dir={app_settings(lab_venv, tmp)}"]
    # every cell stays in the page (no windowing), so each figure can be found and measured
    tracker = tmp / "settings" / "@jupyterlab" / "notebook-extension"
    tracker.mkdir(parents=True, exist_ok=True)
    (tracker / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    log = open(tmp / "lab.log", "wb")  # noqa: SIM115 (the server writes it until the end)
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


def app_settings(lab_venv: Path, tmp: Path) -> Path:
    """The venv's JupyterLab app settings with the project's overrides merged in (what
    ``make install`` writes there), in a temporary copy: a venv made before that still gets
    them, and the venv itself is not changed."""
    src, dst = lab_venv / "share" / "jupyter" / "lab" / "settings", tmp / "app-settings"
    if src.is_dir():
        shutil.copytree(src, dst)
    dst.mkdir(exist_ok=True)
    over = dst / "overrides.json"
    merged = json.loads(over.read_text()) if over.exists() else {}
    for plugin, values in json.loads((ROOT / "scripts" / "lab-overrides.json").read_text()).items():
        merged.setdefault(plugin, {}).update(values)
    over.write_text(json.dumps(merged, indent=2))
    return dst


def wait_http(port: int, timeout: float = 90) -> None:
    import urllib.request

    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/lab", timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"jupyter lab did not answer on port {port} within {timeout:.0f} s")


def browser(tmp: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1400,1000",
                 "--disable-dev-shm-usage", f"--user-data-dir={tmp / 'chrome'}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    return webdriver.Chrome(service=Service(driver), options=opts)


# --- what the page shows (JavaScript run in the page) -----------------------------------------

# the current notebook's panel (earlier notebooks' tabs stay out of the counts)
NB = "(window.jupyterapp.shell.currentWidget || {node: document}).node"
# one entry per plotly output: an interactive plot, or the PNG snapshot that plotly's
# JupyterLab renderer stores beside a drawn figure and shows when the notebook is reopened
# (and one per FigureWidget plot, which the notebooks no longer use)
JS_FIGURES = r"""
const nb = """ + NB + r""";
const nodes = [...nb.querySelectorAll('.jp-RenderedPlotly')];
for (const p of nb.querySelectorAll('.js-plotly-plot'))  // a FigureWidget's plot, if any
  if (!p.closest('.jp-RenderedPlotly')) nodes.push(p);
return nodes.map(p => {
  const out = p.closest('.jp-OutputArea-output') || p;
  const svg = p.querySelector('.main-svg');
  const container = p.querySelector('.plot-container');
  const img = p.querySelector('img.plot-img');
  const interactive = !!(svg && container && container.style.display !== 'none');
  const still = !interactive && !!(img && img.style.display !== 'none' && img.naturalWidth > 0);
  const cells = [...nb.querySelectorAll('.jp-Cell')];
  const traces = interactive ? (p._fullData || p.data || []) : [];  // _fullData: decoded
  let points = 0, stage1 = 0, stage2 = 0;
  let first = null;  // the first training phase (stage1, or baseline), then the others
  for (const t of traces) {
    const n = (t.x && t.x.length) || 0;
    points += n;
    const m = /\(([^)]+)\)$/.exec(t.name || '');
    if (!m) continue;
    if (first === null) first = m[1];
    if (m[1] === first) stage1 += n; else stage2 += n;
  }
  const cs = getComputedStyle(out);
  const pad = parseFloat(cs.paddingLeft) + parseFloat(cs.paddingRight);
  const inner = interactive ? svg.getBoundingClientRect().width
              : still ? img.getBoundingClientRect().width : 0;
  return {cell: cells.indexOf(p.closest('.jp-Cell')), inner, kind: interactive ? 'plot'
          : still ? 'png' : 'empty', container: p.getBoundingClientRect().width,
          outer: out.getBoundingClientRect().width - pad, traces: traces.length, points,
          stage1, stage2, title: ((p.layout || {}).title || {}).text || ''};
});
"""
JS_SAMPLER = """
window.__lc = [];
const stats = new Function(arguments[0]);
const t0 = performance.now();
window.__lcTimer = setInterval(() => {
  for (const x of stats()) {
    if (!x.title.includes('loss, temperature')) continue;  // a LiveCurves figure
    const mine = window.__lc.filter(s => s.title === x.title && s.cell === x.cell);
    const last = mine[mine.length - 1];
    if (!last || last.stage1 !== x.stage1 || last.stage2 !== x.stage2)
      window.__lc.push({t: performance.now() - t0, cell: x.cell, title: x.title,
                        stage1: x.stage1, stage2: x.stage2});
  }
}, 50);
"""
JS_BUSY = (f"return [...{NB}.querySelectorAll('.jp-InputArea-prompt')]"
           ".some(p => p.innerText.includes('*'))")
JS_WIDGET_ERRORS = f"""
const cells = [...{NB}.querySelectorAll('.jp-Cell')];
return [...{NB}.querySelectorAll('.jp-OutputArea-output')]
  .filter(o => /Error displaying widget|model not found/.test(o.innerText))
  .map(o => 'cell ' + cells.indexOf(o.closest('.jp-Cell')) + ': ' + o.innerText.slice(0, 80));
"""
JS_WIDGETS = (f"return [{NB}.querySelectorAll('.widget-slider').length,"
              f" {NB}.querySelectorAll('.jupyter-widgets.widget-output').length]")
JS_STDERR = f"""
return [...{NB}.querySelectorAll('.jp-OutputArea-output')]
  .filter(o => o.dataset.mimeType === 'application/vnd.jupyter.stderr'
               || o.querySelector('[data-mime-type="application/vnd.jupyter.stderr"]'))
  .map(o => o.innerText.slice(0, 200));
"""


def wait_notebook(drv, timeout: float = 90) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout and not drv.execute_script(
            "return !!(window.jupyterapp && document.querySelector('.jp-Notebook .jp-Cell'))"):
        time.sleep(0.5)
    time.sleep(3)


def kernel_idle(drv) -> bool:
    return drv.execute_script(
        "const w = window.jupyterapp.shell.currentWidget;"
        "const k = w && w.sessionContext && w.sessionContext.session"
        " && w.sessionContext.session.kernel;"
        "return !!k && k.status === 'idle';")


def settle(drv, expect_figures: int, timeout: float = 90) -> list:
    """Wait until the page shows ``expect_figures`` drawn figures and no 'Loading widget'."""
    t0 = time.time()
    figs = []
    while time.time() - t0 < timeout:
        figs = drv.execute_script(JS_FIGURES)
        loading = drv.execute_script(
            f"return [...{NB}.querySelectorAll('.jp-OutputArea-output')]"
            ".some(o => o.innerText.startsWith('Loading widget'))")
        if len(figs) >= expect_figures and all(f["inner"] > 0 for f in figs) and not loading:
            break
        time.sleep(1)
    time.sleep(2)
    return drv.execute_script(JS_FIGURES)


def browser_errors(drv) -> tuple:
    """The console since the last call: anywidget models that failed to initialize (what a
    FigureWidget does after a reload), and how many 'model not found' lines ipywidgets logged
    (it logs them while it restores models from the kernel and then the notebook)."""
    try:
        logs = drv.get_log("browser")
    except Exception:  # noqa: BLE001 (a driver without the log endpoint)
        return [], 0
    return ([e["message"][:160] for e in logs if "Failed to initialize model" in e["message"]],
            sum("model not found" in e["message"] for e in logs))


def check_notebook(drv, port: int, name: str, args, failures: list) -> None:
    print(f"--- {name}", flush=True)
    if drv.current_url.startswith("http"):  # the previous notebook's tab closed
        drv.execute_script("window.jupyterapp.commands.execute('application:close-all')")
        time.sleep(2)
    drv.get(f"http://127.0.0.1:{port}/lab/tree/{name}")
    wait_notebook(drv)
    time.sleep(3)  # dialogs show up shortly after the shell
    dialogs = drv.execute_script(
        "return [...document.querySelectorAll('.jp-Dialog, .jp-toast-message, "
        ".Toastify__toast')].map(d => d.innerText.slice(0, 100))")
    check(failures, not dialogs, "no dialog or prompt over the page", f"dialogs: {dialogs}")
    t0 = time.time()
    while time.time() - t0 < 60 and not kernel_idle(drv):
        time.sleep(0.5)
    # the page loads its widget code on the first widget it meets: seconds, longer than a
    # smoke stage 1; a widget opened and closed from the kernel (no cell, no output) loads it
    drv.execute_script(
        "window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.requestExecute("
        "{code: 'import ipywidgets as _w\\n_w.Output().close()', silent: true,"
        " store_history: false})")
    time.sleep(4)
    drv.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    # the live curves are sampled in the page every 50 ms (a selenium round trip is slower
    # than a smoke run's stage 1): each change of a LiveCurves figure's point counts
    drv.execute_script(JS_SAMPLER, JS_FIGURES)
    t0 = time.time()
    while time.time() - t0 < args.timeout:
        busy = drv.execute_script(JS_BUSY)
        if not busy and time.time() - t0 > 10:
            break
        time.sleep(1)
    samples = [(round(r["t"] / 1000, 2), (r["cell"], r["title"]), r["stage1"], r["stage2"])
               for r in drv.execute_script("clearInterval(window.__lcTimer); return window.__lc")]
    run_s = time.time() - t0
    print(f"     ran all cells in {run_s:.0f} s", flush=True)
    errors = drv.execute_script(
        f"return [...{NB}.querySelectorAll('.jp-OutputArea-output')]"
        ".filter(o => o.dataset.mimeType === 'application/vnd.jupyter.error'"
        " || o.querySelector('.jp-RenderedText[data-mime-type=\"application/vnd.jupyter.error\"]'))"
        ".map(o => o.innerText.slice(0, 300))")
    check(failures, not errors, "no cell ended in an error", f"errors: {errors}")
    stderr = drv.execute_script(JS_STDERR)
    check(failures, not stderr, "no red warning output", f"stderr: {stderr}")
    figs = settle(drv, 1)
    report_widths(figs, failures, "after running")
    if args.keep:
        drv.save_screenshot(str(ROOT / "scripts" / f"lab-check-{Path(name).stem}-run.png"))
    growth(samples, failures, args.live_expected.get(name, False))

    # save, reload with the kernel alive
    drv.execute_script("window.jupyterapp.commands.execute('docmanager:save')")
    time.sleep(3)
    browser_errors(drv)  # drop the log so far
    drv.refresh()
    wait_notebook(drv)
    after = settle(drv, len(figs))
    restored(drv, figs, after, failures, "after a reload, kernel alive")
    if args.keep:
        drv.save_screenshot(str(ROOT / "scripts" / f"lab-check-{Path(name).stem}-reload.png"))

    # the kernel gone: what the saved notebook alone shows
    drv.execute_script("window.jupyterapp.serviceManager.sessions.shutdownAll()")
    time.sleep(3)
    browser_errors(drv)
    drv.refresh()
    wait_notebook(drv)
    after = settle(drv, len(figs))
    restored(drv, figs, after, failures, "reopened with the kernel shut down (not re-run)")
    drv.execute_script("window.jupyterapp.serviceManager.sessions.shutdownAll()")
    time.sleep(2)


def report_widths(figs: list, failures: list, when: str) -> None:
    if not figs:
        print(f"     no plotly figure ({when})", flush=True)
        return
    for k, f in enumerate(figs):
        drawn = (f"{f['traces']} traces, {f['points']} points" if f["kind"] == "plot"
                 else "the stored PNG snapshot" if f["kind"] == "png" else "nothing drawn")
        print(f"     figure {k} (cell {f['cell']}): inner {f['inner']:.0f} px, box "
              f"{f['container']:.0f} px, output {f['outer']:.0f} px: {drawn}", flush=True)
    narrow = [(k, round(f["inner"]), round(f["outer"])) for k, f in enumerate(figs)
              if f["outer"] and f["inner"] < 0.97 * f["outer"]]
    check(failures, not narrow, f"{len(figs)} plotly figures fill their outputs "
          f"(inner drawing width, {when})", f"(figure, inner, output): {narrow or 'none drawn'}")


def growth(samples: list, failures: list, expected: bool) -> None:
    by_cell = {}
    for t, cell, s1, s2 in samples:
        by_cell.setdefault(cell, []).append((t, s1, s2))
    for cell, rows in by_cell.items():
        stage1 = [(t, s1) for t, s1, s2 in rows if s2 == 0 and s1 > 0]
        counts = sorted({s1 for _, s1 in stage1})
        shown = ", ".join(f"{s1} at {t:.1f} s" for t, s1 in _firsts(stage1))
        print(f"     live curves {cell[1]!r} (cell {cell[0]}): first-stage points seen "
              f"{shown or 'none'}; "
              f"final {rows[-1][1]} stage-1 and {rows[-1][2]} stage-2 points", flush=True)
        if expected:
            check(failures, len(counts) >= 2,
                  f"live curves grow during their first stage ({cell[1]!r}: {len(counts)} "
                  f"sizes before the next stage)",
                  f"seen {counts}")
    if expected and not by_cell:
        check(failures, False, "live curves grow during stage 1", "no live-curve figure seen")


def _firsts(rows):
    seen, out = set(), []
    for t, n in rows:
        if n not in seen:
            seen.add(n)
            out.append((t, n))
    return out


def restored(drv, before: list, after: list, failures: list, when: str) -> None:
    errors = drv.execute_script(JS_WIDGET_ERRORS)
    console, not_found = browser_errors(drv)
    sliders, outputs_w = drv.execute_script(JS_WIDGETS)
    check(failures, not errors and not console,
          f"widgets render {when} ({sliders} sliders, {outputs_w} output widgets; console: "
          f"no anywidget failure, {not_found} 'model not found' lines)",
          f"page: {errors}, console: {console}")
    empty = [k for k, f in enumerate(after)
             if f["kind"] == "empty" or f["inner"] == 0 or (f["kind"] == "plot" and not f["traces"])]
    same = [(b["points"], a["points"] if a["kind"] == "plot" else a["kind"])
            for b, a in zip(before, after)]
    check(failures, len(after) == len(before) and not empty,
          f"{len(after)} of {len(before)} figures back non-empty {when}",
          f"empty: {empty}, points before/after: {same}")
    report_widths(after, failures, when)


def set_parameters(path: Path, values: dict, code: str = "") -> None:
    """Append assignments (and ``code``) to the copied notebook's parameters cell."""
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            src = "".join(cell["source"])
            cell["source"] = src + "".join(f"\n{k} = {v}  # scripts/check_lab.py"
                                           for k, v in values.items()) + (
                f"\n{code}" if code else "")
            break
    else:
        raise SystemExit(f"{path.name}: no cell tagged 'parameters'")
    path.write_text(json.dumps(nb, indent=1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebooks", nargs="*", default=DEFAULT)
    ap.add_argument("--lab-venv", default=os.environ.get("LAB_VENV", str(ROOT / ".venv")),
                    help="the venv whose jupyter lab (and kernel) runs the notebooks")
    ap.add_argument("--set", action="append", default=None, metavar="NB:NAME=VALUE",
                    help="a parameter for one notebook's copy (default: "
                         + ", ".join(DEFAULT_SET) + ")")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per notebook run")
    ap.add_argument("--keep", action="store_true", help="save screenshots in scripts/")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="lab-check-"))
    root = tmp / "notebooks"
    root.mkdir()
    params: dict = {}
    for item in DEFAULT_SET if args.set is None else args.set:
        nb, _, assign = item.partition(":")
        key, _, value = assign.partition("=")
        params.setdefault(nb, {})[key] = value
    args.live_expected = {}
    for name in args.notebooks:
        shutil.copy(ROOT / "notebooks" / name, root / name)
        retrain = params.get(name, {}).get("RETRAIN") == "True"
        if params.get(name):
            set_parameters(root / name, params[name], LONGER_STAGE1 if retrain else "")
        # growth is checked where a run retrains with the longer stage 1 (00's smoke runs,
        # trained in the temporary cache, are printed only: over before the widget is drawn)
        args.live_expected[name] = retrain
    env = dict(os.environ, MMMIXLAB_SMOKE="1", MMMIXLAB_CACHE=str(tmp / "cache"),
               MMMIXLAB_FIGURES=str(tmp / "figures"), HF_HUB_OFFLINE="1",
               OMP_WAIT_POLICY="PASSIVE", JUPYTER_CONFIG_DIR=str(tmp / "config"),
               JUPYTER_RUNTIME_DIR=str(tmp / "runtime"))
    port = free_port()
    lab = start_lab(Path(args.lab_venv), port, root, tmp, env)
    failures: list = []
    try:
        wait_http(port)
        drv = browser(tmp)
        try:
            for name in args.notebooks:
                check_notebook(drv, port, name, args, failures)
        finally:
            drv.quit()
    finally:
        lab.terminate()
        try:
            lab.wait(timeout=30)
        except subprocess.TimeoutExpired:
            lab.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{'FAILED: ' + '; '.join(failures) if failures else 'all checks passed'}")
    return 1 if failures else 0


def check(failures: list, ok, what: str, detail: str) -> None:
    print(f"{'ok  ' if ok else 'FAIL'} {what}" + ("" if ok else f": {detail}"), flush=True)
    if not ok:
        failures.append(what)


if __name__ == "__main__":
    sys.exit(main())

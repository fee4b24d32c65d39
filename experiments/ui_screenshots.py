"""Screenshots of the MLflow UI after `main`, taken with headless Chromium, and a check that each
page shows, without a click, what a newcomer should see first.

    .venv/bin/python experiments/ui_screenshots.py --fresh            # clone HEAD, ./dev.sh run, shoot
    .venv/bin/python experiments/ui_screenshots.py --store /path/to/checkout   # where main already ran

``--fresh`` clones this repository's HEAD into a temporary folder and runs ``./dev.sh run`` there
(the user's own ``mlflow run . -e main`` on the bundled data, with this checkout's ``.venv``), so
the pictures show what a fresh clone gives and nothing is written into this checkout but the
PNGs. ``--store`` points at a folder holding ``mlflow.db`` (and ``mlruns/``) instead.

Then it starts ``mlflow ui`` on that store (its own process group, killed at the end: the UI
starts helper workers), opens each page in Chromium (``apt-get install chromium``) with a fresh
profile, i.e. as a first visit, and writes ``<out>/<page>.png`` (1600x1200, the main run's page
1600x2000, reduced to 256
colours to keep them small). Each page's rendered text (``--dump-dom``) is checked for what it
must show; the script exits 1 when something is missing and says what.

| page | URL (each with ``?workflowType=machine_learning``) | must show |
| --- | --- | --- |
| experiment | ``#/experiments/<id>`` | the training view (no "Send your first trace"), the ``main`` run |
| runs_table | ``.../runs`` + ``viewStateShareKey=recsys-headline`` (main's link) | headline columns |
| chart_view | ``.../runs`` + ``compareRunsMode=CHART`` | ``ranking``, ``rating`` sections first |
| main_run | ``#/experiments/<id>/runs/<main>`` | its description (what was promoted, and why), its metrics |
| model | ``#/models/recsys-als`` | the model's description, versions with their ``decision`` tag |
| model_version | ``#/models/recsys-als/versions/<champion>`` | why the version is champion |

Why every URL carries ``workflowType=machine_learning``: MLflow 3.18.0's UI has a GenAI /
Model-training switch that follows that URL parameter, else the browser's last choice (GenAI on
a first visit); it does not read the experiment's ``mlflow.experimentKind`` tag (newer MLflow
UIs sync the switch to that tag, which ``recsys`` sets). A plain ``#/experiments/<id>`` opens on
"Send your first trace" in a fresh browser profile.

Written by hand for the README (experiments/results/ui/); not part of any test suite: it needs
Chromium and a `main` run (about 4-8 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "experiments" / "results" / "ui"
WINDOW = os.environ.get("UI_WINDOW", "1600,1200")
#: Pages whose point is further down: the main run's description and metrics table.
TALL = {"main_run": "1600,2000"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_main_in_fresh_clone(workdir: Path) -> Path:
    """``git clone`` this checkout's HEAD into ``workdir/fresh`` and ``./dev.sh run`` there with
    this checkout's venv; returns the clone (its ``mlflow.db`` is the store)."""
    clone = workdir / "fresh"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, check=True, capture_output=True,
                          text=True).stdout.strip()
    subprocess.run(["git", "checkout", "--quiet", head], cwd=clone, check=True)
    env = {**os.environ, "RECSYS_VENV": os.environ.get("RECSYS_VENV", str(ROOT / ".venv"))}
    started = time.time()
    print(f"[ui] ./dev.sh run in {clone} (commit {head[:8]})", flush=True)
    subprocess.run(["./dev.sh", "run"], cwd=clone, env=env, check=True)
    print(f"[ui] main done in {time.time() - started:.0f}s", flush=True)
    return clone


class MlflowUi:
    """``mlflow ui`` on ``store``'s ``mlflow.db``, in a process group of its own."""

    def __init__(self, store: Path, log: Path):
        self.store, self.port, self.log = store, _free_port(), log
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def __enter__(self):
        mlflow = shutil.which("mlflow") or str(Path(sys.executable).parent / "mlflow")
        with open(self.log, "w") as fh:
            self.proc = subprocess.Popen(
                [mlflow, "ui", "--backend-store-uri", f"sqlite:///{self.store / 'mlflow.db'}",
                 "--host", "127.0.0.1", "--port", str(self.port)],
                cwd=self.store, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                urllib.request.urlopen(self.url + "/health", timeout=5).close()
                return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"mlflow ui exited: see {self.log}") from None
                time.sleep(1)
        raise RuntimeError(f"mlflow ui did not answer on {self.url} within 180 s: see {self.log}")

    def __exit__(self, *exc):
        if self.proc is None:
            return
        pgid = os.getpgid(self.proc.pid)  # start_new_session: the group is the UI's own
        os.killpg(pgid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            self.proc.wait()
        time.sleep(1)
        try:
            os.killpg(pgid, signal.SIGKILL)  # workers that outlived their parent
        except ProcessLookupError:
            pass


def chromium(url: str, *, screenshot: Path | None = None, budget_ms: int = 40000,
             window: str = WINDOW) -> str:
    """Render ``url`` in a fresh headless profile; the rendered DOM, and a PNG if asked."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        raise SystemExit("chromium not found: apt-get install -y chromium")
    with tempfile.TemporaryDirectory(prefix="recsys-chromium-") as profile:
        args = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                f"--user-data-dir={profile}", f"--window-size={window}",
                f"--virtual-time-budget={budget_ms}"]
        if screenshot is not None:
            done = subprocess.run([*args, f"--screenshot={screenshot}", url], capture_output=True,
                                  text=True, timeout=300)
            if done.returncode or not screenshot.exists():
                raise RuntimeError(f"chromium failed on {url}: {done.stderr[-2000:]}")
        dom = subprocess.run([*args, "--dump-dom", url], capture_output=True, text=True, timeout=300)
        return dom.stdout


def visible_text(dom: str) -> str:
    """The page's text as a reader sees it: tags dropped, entities decoded, spaces collapsed
    (a label such as "ranking (2)" is split over several elements in the DOM)."""
    import html
    import re

    text = re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", dom)))
    return text.replace("( ", "(").replace(" )", ")")


def shrink(path: Path) -> None:
    """256 colours: UI screenshots keep their look at a fraction of the size."""
    from PIL import Image

    with Image.open(path) as img:
        small = img.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


def pages(client, model: str = "recsys-als") -> list[tuple[str, str, list[str], list[str]]]:
    """``(name, URL path, texts it must show, texts it must not show)`` for each page."""
    exp = client.get_experiment_by_name("recsys")
    if exp is None:
        raise SystemExit("no experiment 'recsys' in this store: run `main` first")
    [main] = client.search_runs([exp.experiment_id], "tags.`recsys.stage` = 'main'",
                                order_by=["attributes.start_time DESC"], max_results=1)
    champion = client.get_model_version_by_alias(model, "champion")
    e, run = exp.experiment_id, main.info.run_id
    ml = "workflowType=machine_learning"  # what main's link carries: 3.18's switch follows it
    headline = ["ranking/champion_test_precision_at_k", "ranking/popularity_test_precision_at_k",
                "rating/champion_test_rmse", "rating/bias_test_rmse"]
    genai = ["Send your first trace"]
    return [
        ("experiment", f"#/experiments/{e}?{ml}", ["main", "Model training"], genai),
        ("runs_table", f"#/experiments/{e}/runs?{ml}&viewStateShareKey=recsys-headline", headline, genai),
        ("chart_view", f"#/experiments/{e}/runs?{ml}&compareRunsMode=CHART",
         ["ranking (2)", "rating (2)", "ranking/champion_test_precision_at_k"], genai),
        ("main_run", f"#/experiments/{e}/runs/{run}?{ml}", ["what was promoted", "Why:", *headline], genai),
        ("model", f"#/models/{model}?{ml}", ["Top-K movie recommender", "decision"], []),
        ("model_version", f"#/models/{model}/versions/{champion.version}?{ml}",
         ["Champion", "Why:", "popularity baseline"], []),
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--fresh", action="store_true", help="clone HEAD to a temp dir and ./dev.sh run there")
    where.add_argument("--store", type=Path, help="folder holding mlflow.db after a main run")
    parser.add_argument("--out", type=Path, default=OUT, help=f"where the PNGs go (default {OUT})")
    parser.add_argument("--keep", action="store_true", help="keep the --fresh clone (its path is printed)")
    args = parser.parse_args(argv)

    import mlflow

    workdir = Path(tempfile.mkdtemp(prefix="recsys-ui-"))
    try:
        store = run_main_in_fresh_clone(workdir) if args.fresh else args.store.resolve()
        client = mlflow.MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
        todo = pages(client)
        args.out.mkdir(parents=True, exist_ok=True)
        missing = []
        with MlflowUi(store, workdir / "mlflow-ui.log") as ui:
            for name, path, wanted, unwanted in todo:
                png = args.out / f"{name}.png"
                dom = chromium(f"{ui.url}/{path}", screenshot=png, window=TALL.get(name, WINDOW))
                text = visible_text(dom)
                shrink(png)
                lacks = [want for want in wanted if want not in text]
                shows = [unwant for unwant in unwanted if unwant in text]
                status = "ok" if not (lacks or shows) else f"MISSING {lacks} UNWANTED {shows}"
                print(f"[ui] {name:14s} {png.stat().st_size / 1024:6.0f} KiB  {status}", flush=True)
                if lacks or shows:
                    missing.append(name)
        return 1 if missing else 0
    finally:
        if args.keep:
            print(f"[ui] kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

"""Serving benchmark: the registered recommender (``recsys/serving.py``) at ml-latest's full scale.

    .venv/bin/python experiments/bench_serving.py            # full scale: ~5 min (+ ~5 to generate)
    .venv/bin/python experiments/bench_serving.py --small    # 5k users x 2k movies x rank 16, < 60 s

1. Builds, without Spark, a factor directory in exactly the layout ``recsys.factors.export_factors``
   writes (same file names, dtypes, ``meta.json`` fields) and saves it as an MLflow pyfunc the way
   ``recsys.tracking.log_recommender_model`` logs it (``python_model=recsys/serving.py``,
   ``artifacts={"factors": ...}``, same signature, input example, pip requirements), to a local
   path. Full scale: 330,975 users x 86,537 movies at rank 64 and 33.8M seen pairs. The factors
   are random float32 normals: a matrix-vector product and a partition cost the same whatever
   the values, so the timings hold for a trained model. The seen pairs are shaped like
   MovieLens: log-normal ratings per user (``recsys.data.synthetic.USER_SIGMA``, at least 1, at
   most the catalogue) and movies drawn by the generator's skewed popularity
   (``(r + r0)^-a``) without replacement; seeded, so the same flags give the same bytes. Both
   directories live in ``--scratch`` under a name made of the parameters and are reused.
2. Model load: ``mlflow.pyfunc.load_model`` timed in ``--repeats`` fresh Python processes, each
   reporting its ``VmRSS`` / ``VmHWM`` (``/proc/self/status``) after the load and after
   ``--child-predicts`` single-user predictions. Targets: load <= 30 s, memory <= 2 GB.
3. In-process, single user, k=10, ``--users`` random known users per pass, ``--repeats`` passes,
   the variants interleaved user by user so machine load hits them alike:
   ``pyfunc`` = ``PyFuncModel.predict(frame, params={"k": 10})`` (the one-row frame is built
   before the clock starts); ``model`` = the unwrapped ``PythonModel.predict`` (MLflow's wrapper
   left out); ``bare`` = ``s = Q @ p; s[seen] = -inf; argpartition(-s, k)[:k]`` then sorted;
   ``bare_nomask`` = the same without the seen line. Target: median pyfunc / median bare <= 2.
   Every pyfunc list is checked against the bare one (same movies, same order).
4. HTTP: ``mlflow models serve -m <model> --env-manager local -h 127.0.0.1 -p <free port>``
   (the mlflow next to this interpreter), waited for on ``/ping`` (bounded by
   ``--ready-timeout``), 20 warm-up requests, then ``--repeats`` passes of ``--requests``
   sequential single-user POSTs on one kept-alive ``http.client`` connection; a request's time
   runs from sending it to having read the whole body. Target: p99 <= 50 ms. Then three bad
   payloads, each expected to get HTTP 400. The server's process group is killed in a
   ``finally``.
Parts 2-4 run once per ``--blas-threads`` setting (full scale: ``default,1``): ``default`` leaves
NumPy's BLAS as it starts (OpenBLAS: one thread a core), ``N`` sets ``OPENBLAS_NUM_THREADS`` (and
the OpenMP / MKL ones) for the load processes and the server and ``threadpoolctl`` limits in-process.

5. Writes ``<results>.md`` and ``<results>.csv`` (default ``experiments/results/serving``; in
   ``--small`` mode under the scratch folder): every figure with the 1-minute load average
   taken when its measurement started, its target and whether it was met.

``main(argv)`` returns the result rows (dicts, the CSV's columns).
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from recsys.data import POPULARITY_EXPONENT, POPULARITY_OFFSET, USER_SIGMA  # noqa: E402
from recsys.recommend import FORMAT, META_FILE, POPULAR_N  # noqa: E402

DEFAULT_SCRATCH = ROOT / "outputs" / "benchmark" / "serving"
DEFAULT_RESULTS = ROOT / "experiments" / "results" / "serving"
K = 10
#: Targets: (comparison, limit). Memory in MB (2 GB = 2048 MB).
LOAD_TARGET_S = 30.0
MEMORY_TARGET_MB = 2048.0
RATIO_TARGET = 2.0
P99_TARGET_MS = 50.0
#: Movie ids are spread like ml-latest's (86,537 movies, largest id 288,983: 3.34 ids a movie).
ID_SPREAD = 3.34
#: Users with more seen movies than this are drawn exactly (Efraimidis-Spirakis over the whole
#: catalogue); lighter ones by repeated draws with replacement, which converge fast only while a
#: user's movies are a small part of the popularity mass.
EXACT_DRAW_ABOVE = 2000
BAD_PAYLOADS = {
    "unknown column": {"dataframe_records": [{"userId": 1, "foo": 2}]},
    "string userId": {"dataframe_records": [{"userId": "abc"}]},
    "k=0": {"dataframe_records": [{"userId": 1}], "params": {"k": 0}},
}


@dataclass(frozen=True)
class Scale:
    """Size of the generated model: users, movies, factor rank, seen pairs, seed."""

    n_users: int
    n_movies: int
    rank: int
    n_pairs: int
    seed: int = 42

    def name(self) -> str:
        return f"u{self.n_users}-m{self.n_movies}-r{self.rank}-p{self.n_pairs}-s{self.seed}"


FULL = Scale(330_975, 86_537, 64, 33_832_162)
SMALL = Scale(5_000, 2_000, 16, 510_000)
#: Per-mode defaults of the measurement sizes (flags override them).
DEFAULTS = {
    "full": {"repeats": 3, "users": 500, "requests": 1000, "child_predicts": 200,
             "blas_threads": "default,1"},
    "small": {"repeats": 1, "users": 300, "requests": 200, "child_predicts": 50,
              "blas_threads": "default"},
}
#: Environment variables that cap the BLAS threads of a process (read when NumPy loads its BLAS).
BLAS_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


# ---------------------------------------------------------------- the model directory


def draw_seen(scale: Scale, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """MovieLens-shaped seen pairs as CSR over user positions: (indptr int64 [users + 1],
    indices int32 [pairs], item positions ascending within each user, no duplicates).

    The total is within about 0.1% of ``scale.n_pairs`` (the log-normal scale is solved for it).
    """
    n_users, n_movies = scale.n_users, scale.n_movies
    z = rng.standard_normal(n_users)

    def counts_for(s: float) -> np.ndarray:
        return np.clip(np.round(s * np.exp(USER_SIGMA * z)), 1, n_movies).astype(np.int64)

    low, high = 1e-6, float(n_movies)
    for _ in range(80):  # the total grows with the scale: bisect on a log scale
        mid = (low * high) ** 0.5
        low, high = (mid, high) if counts_for(mid).sum() < scale.n_pairs else (low, mid)
    counts = counts_for(high)
    ranks = np.arange(n_movies, dtype=np.float64)
    weights = (ranks + 1.0 + POPULARITY_OFFSET * n_movies) ** -POPULARITY_EXPONENT
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    position_of_rank = rng.permutation(n_movies).astype(np.int64)  # popularity rank -> item position

    exact = counts > min(EXACT_DRAW_ABOVE, n_movies // 8)
    need = np.where(exact, 0, counts)
    # accepted pairs as user * n_movies + item position: the first round's (most of them) and
    # the later rounds' (few), each sorted and distinct, so a round costs what it draws
    first_round, later_rounds = np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    have = np.zeros(n_users, dtype=np.int64)
    for round_ in range(60):
        users = np.flatnonzero(need > 0)
        if users.size == 0:
            break
        # the first round draws exactly what is needed (34M at full scale); later rounds draw
        # extra, since repeats of popular movies are then most of the draws
        draws = need[users] if round_ == 0 else need[users] * 4 + 8
        owner = np.repeat(users, draws)
        drawn = np.minimum(np.searchsorted(cdf, rng.random(owner.shape[0]), side="right"), n_movies - 1)
        fresh = np.unique(owner * n_movies + position_of_rank[drawn])
        del owner, drawn
        for taken in (first_round, later_rounds):
            if taken.size:
                at = np.minimum(np.searchsorted(taken, fresh), taken.shape[0] - 1)
                fresh = fresh[taken[at] != fresh]
        if round_ > 0:  # keep a random subset of at most need[user] new movies per user
            fresh = fresh[np.lexsort((rng.random(fresh.shape[0]), fresh // n_movies))]
            fresh_user = fresh // n_movies
            first = np.searchsorted(fresh_user, fresh_user, side="left")
            fresh = np.sort(fresh[np.arange(fresh.shape[0]) - first < need[fresh_user]])
            later_rounds = np.sort(np.concatenate([later_rounds, fresh]))
        else:
            first_round = fresh
        have += np.bincount(fresh // n_movies, minlength=n_users)
        need = np.where(exact, 0, counts - have)
    keys = np.sort(np.concatenate([first_round, later_rounds]))
    del first_round, later_rounds
    # users still short after the rounds (none at the two built-in scales) join the exact draw
    exact |= need > 0
    if exact.any():
        keys = keys[~exact[keys // n_movies]]
        extra = []
        for user in np.flatnonzero(exact):
            priority = rng.exponential(size=n_movies) / weights
            chosen = np.argpartition(priority, counts[user] - 1)[:counts[user]]
            extra.append(user * n_movies + position_of_rank[chosen])
        keys = np.sort(np.concatenate([keys, *extra]))
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(keys // n_movies, minlength=n_users), out=indptr[1:])
    return indptr, (keys % n_movies).astype(np.int32)


def build_factors(out_dir: Path, scale: Scale, say=print) -> dict:
    """Write a factor directory in ``recsys.factors``' layout (kind ``ranking``) to ``out_dir``.

    Written under a temporary name and renamed into place, as ``export_factors`` does, so a
    directory that exists is complete. Returns the ``meta.json`` written.
    """
    rng = np.random.default_rng(scale.seed)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    files: dict[str, dict] = {}

    def save(name: str, array: np.ndarray) -> None:
        np.save(tmp / name, array, allow_pickle=False)
        files[name] = {"dtype": str(array.dtype), "shape": list(array.shape)}

    try:
        start = time.time()
        user_ids = np.arange(1, scale.n_users + 1, dtype=np.int32)
        span = max(scale.n_movies, round(scale.n_movies * ID_SPREAD))
        item_ids = np.sort(rng.choice(span, size=scale.n_movies, replace=False) + 1).astype(np.int32)
        save("user_ids.npy", user_ids)
        save("user_factors.npy", rng.standard_normal((scale.n_users, scale.rank), dtype=np.float32) * 0.1)
        save("item_ids.npy", item_ids)
        save("item_factors.npy", rng.standard_normal((scale.n_movies, scale.rank), dtype=np.float32) * 0.1)
        say(f"[bench_serving] factors written in {time.time() - start:.1f}s; drawing the seen pairs")
        indptr, indices = draw_seen(scale, rng)
        save("seen_indptr.npy", indptr)
        save("seen_indices.npy", indices)
        # popularity = training rating count, best first, ties by movieId (as PopularityRecommender)
        per_movie = np.bincount(indices, minlength=scale.n_movies)
        top = np.lexsort((item_ids, -per_movie))[:POPULAR_N]
        save("popular_ids.npy", item_ids[top])
        save("popular_scores.npy", per_movie[top].astype(np.float64))
        with open(tmp / "titles.json", "w", encoding="utf-8") as fh:
            titles = [f"Synthetic movie {m} (2001)" for m in item_ids]
            json.dump({"movieId": item_ids.tolist(), "title": titles}, fh)
        files["titles.json"] = {"entries": int(scale.n_movies)}
        meta = {"format": FORMAT, "kind": "ranking", "feedback": "implicit", "rank": scale.rank,
                "n_users": scale.n_users, "n_movies": scale.n_movies, "n_seen_pairs": int(indices.shape[0]),
                "n_popular": int(top.shape[0]), "global_mean": None, "min_rating": None, "max_rating": None,
                "als_config": {}, "files": files,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "skipped": {"users": 0, "pairs": 0},
                "benchmark": {"generator": "experiments/bench_serving.py", **asdict(scale),
                              "seen_per_user_median": float(np.median(np.diff(indptr))),
                              "seen_per_user_max": int(np.diff(indptr).max())}}
        with open(tmp / META_FILE, "w", encoding="utf-8") as fh:
            json.dump(meta, fh, indent=2, sort_keys=True)
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shape = meta["benchmark"]
    say(f"[bench_serving] {meta['n_seen_pairs']:,} seen pairs (median {shape['seen_per_user_median']:.0f}, "
        f"max {shape['seen_per_user_max']} per user) in {time.time() - start:.1f}s -> {out_dir}")
    return meta


def build_model(scratch: Path, scale: Scale, say=print) -> Path:
    """The pyfunc model directory for ``scale`` under ``scratch`` (built if absent, else reused)."""
    import mlflow
    import pandas as pd

    from recsys.recommend import serving

    base = scratch / scale.name()
    factors_dir, model_dir = base / "factors", base / "model"
    if not (factors_dir / META_FILE).is_file():
        build_factors(factors_dir, scale, say)
    else:
        say(f"[bench_serving] reusing {factors_dir}")
    if (model_dir / "MLmodel").is_file():
        say(f"[bench_serving] reusing {model_dir}")
        return model_dir
    tmp = base / f".model.tmp-{uuid.uuid4().hex[:8]}"
    start = time.time()
    try:
        # the arguments of recsys.tracking.log_recommender_model, saved to a path instead of a run
        mlflow.pyfunc.save_model(
            str(tmp), python_model=str(Path(serving.__file__).resolve()),
            artifacts={"factors": str(factors_dir)}, signature=serving.model_signature(),
            input_example=(pd.DataFrame({"userId": [1]}), {"k": 3}),
            pip_requirements=[f"mlflow=={mlflow.__version__}", f"numpy=={np.__version__}", "threadpoolctl",
                              f"pandas=={pd.__version__}"],
            metadata={"recsys_inputs": serving.INPUT_DOC, "recsys_kind": "ranking",
                      "recsys_benchmark": asdict(scale)})
        os.rename(tmp, model_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    say(f"[bench_serving] model saved in {time.time() - start:.1f}s -> {model_dir}")
    return model_dir


# ---------------------------------------------------------------- measurements


def _memory_mb() -> dict:
    """VmRSS and VmHWM of this process in MB, from /proc/self/status."""
    out = {}
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                out[name] = int(value.split()[0]) / 1024.0
    return out


def child_load(model_dir: str, predicts: int, seed: int) -> dict:
    """Run in a fresh process: time ``import mlflow.pyfunc`` and ``load_model``, read the memory
    after the load and after ``predicts`` single-user k=10 predictions of random known users."""
    start = time.perf_counter()
    import mlflow.pyfunc
    import pandas as pd

    imported = time.perf_counter()
    model = mlflow.pyfunc.load_model(model_dir)
    loaded = time.perf_counter()
    after_load = _memory_mb()
    users = np.random.default_rng(seed).choice(model.unwrap_python_model().user_ids, size=predicts)
    for user in users:
        model.predict(pd.DataFrame({"userId": [int(user)]}), params={"k": K})
    after_predict = _memory_mb()
    return {"import_s": imported - start, "load_s": loaded - imported,
            "rss_load_mb": after_load["VmRSS"], "hwm_load_mb": after_load["VmHWM"],
            "rss_predict_mb": after_predict["VmRSS"], "hwm_predict_mb": after_predict["VmHWM"]}


def _blas_description() -> str:
    """NumPy's BLAS and its default thread count in this process, when threadpoolctl can tell."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown (threadpoolctl not installed)"
    found = [f"{info.get('internal_api')} {info.get('version')}, {info.get('num_threads')} threads"
             for info in threadpool_info() if info.get("user_api") == "blas"]
    return "; ".join(found) or "none found"


def _load1() -> float:
    return round(os.getloadavg()[0], 2)


def _pct(values_s: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values_s) * 1e3, q))


def measure_load(model_dir: Path, repeats: int, predicts: int, seed: int, env: dict | None = None,
                 say=print) -> list[dict]:
    """``repeats`` fresh processes (environment ``env``), each loading the model (see :func:`child_load`)."""
    results = []
    for index in range(repeats):
        load = _load1()
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child-load", str(model_dir),
               "--child-predicts", str(predicts), "--seed", str(seed + index)]
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
        wall = time.perf_counter() - start
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode != 0 or not lines:
            raise RuntimeError(f"load child failed ({done.returncode}):\n{done.stderr[-3000:]}")
        result = {**json.loads(lines[-1][len("RESULT "):]), "process_s": wall, "load1": load}
        shown = json.dumps({key: round(value, 2) for key, value in result.items()})
        say(f"[bench_serving] load {index + 1}/{repeats}: {shown}")
        results.append(result)
    return results


def measure_inprocess(model_dir: Path, passes: int, n_users: int, seed: int, blas_threads: int | None = None,
                      say=print) -> list[dict]:
    """Per pass: single-user k=10 latencies (seconds) of the four variants, interleaved per user.
    ``blas_threads``: BLAS threads for the duration (``threadpoolctl``); None leaves them as they are."""
    import contextlib

    limit = contextlib.nullcontext()
    if blas_threads is not None:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError as err:
            raise RuntimeError(f"--blas-threads {blas_threads} in-process needs threadpoolctl "
                               "(pip install threadpoolctl); or measure only 'default'") from err
        limit = threadpool_limits(limits=blas_threads, user_api="blas")
    with limit:
        return _inprocess_passes(model_dir, passes, n_users, seed, say)


def _inprocess_passes(model_dir: Path, passes: int, n_users: int, seed: int, say) -> list[dict]:
    import mlflow.pyfunc
    import pandas as pd

    model = mlflow.pyfunc.load_model(str(model_dir))
    impl = model.unwrap_python_model()
    item_factors, user_factors = impl.item_factors, impl.user_factors
    indptr, indices, item_ids = impl.seen_indptr, impl.seen_indices, impl.item_ids

    def bare(pos: int, mask: bool) -> np.ndarray:
        scores = item_factors @ user_factors[pos]
        if mask:
            scores[indices[indptr[pos]:indptr[pos + 1]]] = -np.inf
        top = np.argpartition(-scores, K)[:K]
        return top[np.argsort(-scores[top], kind="stable")]

    variants = {
        "bare_nomask": lambda pos, frame: bare(pos, False),
        "bare": lambda pos, frame: bare(pos, True),
        "pyfunc": lambda pos, frame: model.predict(frame, params={"k": K}),
        "model": lambda pos, frame: impl.predict(None, frame, params={"k": K}),
    }
    names = list(variants)
    rng = np.random.default_rng(seed)
    results = []
    for index in range(passes):
        load = _load1()
        positions = rng.choice(impl.user_ids.shape[0], size=n_users + 20, replace=False)
        times: dict[str, list[float]] = {name: [] for name in names}
        mismatches = 0
        for count, pos in enumerate(positions.tolist()):
            frame = pd.DataFrame({"userId": [int(impl.user_ids[pos])]})
            answers = {}
            # rotate the order so no variant always runs right after another's cache misses
            for shift in range(len(names)):
                name = names[(count + shift) % len(names)]
                start = time.perf_counter()
                answers[name] = variants[name](pos, frame)
                elapsed = time.perf_counter() - start
                if count >= 20:  # the first 20 users warm the pages and the code paths
                    times[name].append(elapsed)
            # a user who has seen all but j < k movies gets j rows from the model, k from bare
            expected = answers["bare"][~np.isin(answers["bare"], indices[indptr[pos]:indptr[pos + 1]])]
            if not np.array_equal(answers["pyfunc"]["movieId"].to_numpy(), item_ids[expected]):
                mismatches += 1
        summary = {"load1": load, "users": n_users, "mismatches": mismatches,
                   **{name: times[name] for name in names}}
        medians = {name: round(_pct(times[name], 50), 3) for name in names}
        say(f"[bench_serving] in-process pass {index + 1}/{passes}: median ms {medians}, "
            f"lists differing from bare: {mismatches}")
        results.append(summary)
    return results


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _group_rss_mb(pgid: int) -> float:
    """Summed VmRSS of the live processes in process group ``pgid`` (the server and its workers)."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.getpgid(int(entry)) != pgid:
                continue
            with open(f"/proc/{entry}/status", encoding="ascii") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) / 1024.0
        except (OSError, ValueError):
            continue
    return total


def _group_cpu_s(pgid: int) -> float:
    """CPU seconds (user + system) used so far by the live processes in process group ``pgid``."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        # the command name may hold spaces and parentheses: the fields start after its last ')'
        fields = stat[stat.rfind(b")") + 2:].split()
        if int(fields[2]) == pgid:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _post(conn: http.client.HTTPConnection, body: bytes) -> tuple[int, bytes]:
    conn.request("POST", "/invocations", body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    return response.status, response.read()


def measure_http(model_dir: Path, passes: int, requests: int, warmup: int, seed: int, scratch: Path,
                 ready_timeout: float, mlflow_bin: Path, env: dict | None = None, say=print) -> dict:
    """Serve the model (environment ``env``), then ``passes`` x ``requests`` sequential single-user
    POSTs and the bad payloads. Returns ready time, per-pass latencies (seconds) and server CPU,
    bad-payload statuses and times, the server's memory."""
    meta = json.loads((model_dir / "artifacts" / "factors" / META_FILE).read_text())
    users = np.load(model_dir / "artifacts" / "factors" / "user_ids.npy", mmap_mode="r")
    port = _free_port()
    env = dict(env or os.environ)
    env["PATH"] = f"{mlflow_bin.parent}{os.pathsep}{env.get('PATH', '')}"
    log_path = scratch / "serve.log"
    cmd = [str(mlflow_bin), "models", "serve", "-m", str(model_dir), "--env-manager", "local",
           "-h", "127.0.0.1", "-p", str(port)]
    ready_load = _load1()
    start = time.perf_counter()
    with open(log_path, "w") as log:
        server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = start + ready_timeout
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"mlflow models serve exited with {server.returncode}:\n"
                                   f"{log_path.read_text()[-3000:]}")
            try:
                ping = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                ping.request("GET", "/ping")
                if ping.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.perf_counter() > deadline:
                raise TimeoutError(f"no /ping answer within {ready_timeout:.0f}s; see {log_path}")
            time.sleep(0.5)
        ready_s = time.perf_counter() - start
        say(f"[bench_serving] server ready on 127.0.0.1:{port} in {ready_s:.1f}s")
        rng = np.random.default_rng(seed)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

        def body(user: int) -> bytes:
            return json.dumps({"dataframe_records": [{"userId": user}], "params": {"k": K}}).encode()

        for user in rng.choice(users, size=warmup):
            status, _ = _post(conn, body(int(user)))
            if status != 200:
                raise RuntimeError(f"warm-up request for user {user} got HTTP {status}")
        results = []
        for index in range(passes):
            load = _load1()
            latencies = []
            cpu_before = _group_cpu_s(server.pid)
            for user in rng.choice(users, size=requests).tolist():
                payload = body(int(user))
                begin = time.perf_counter()
                status, raw = _post(conn, payload)
                latencies.append(time.perf_counter() - begin)
                rows = json.loads(raw).get("predictions", []) if status == 200 else []
                if status != 200 or len(rows) != K or any(row["userId"] != user for row in rows):
                    raise RuntimeError(f"user {user}: HTTP {status}, {len(rows)} rows: {raw[:300]!r}")
            # server CPU per request: what a request costs when it never waits for a core
            cpu_ms = (_group_cpu_s(server.pid) - cpu_before) / requests * 1e3
            say(f"[bench_serving] HTTP pass {index + 1}/{passes}: p50 {_pct(latencies, 50):.2f} ms, "
                f"p99 {_pct(latencies, 99):.2f} ms, max {max(latencies) * 1e3:.1f} ms, server CPU "
                f"{cpu_ms:.2f} ms a request (load {load})")
            results.append({"load1": load, "latencies": latencies, "server_cpu_ms": cpu_ms})
        bad = {}
        for name, payload in BAD_PAYLOADS.items():
            load = _load1()
            begin = time.perf_counter()
            status, raw = _post(conn, json.dumps(payload).encode())
            bad[name] = {"status": status, "seconds": time.perf_counter() - begin, "load1": load,
                         "message": raw.decode(errors="replace")}
        conn.close()
        return {"ready_s": ready_s, "ready_load1": ready_load, "passes": results, "bad": bad,
                "server_rss_mb": _group_rss_mb(server.pid), "n_users": meta["n_users"]}
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(timeout=10)


# ---------------------------------------------------------------- the table


def _row(config: str, measure: str, run: str, load1: float, value: float, unit: str,
         target: str | None = None, met: bool | None = None, note: str = "") -> dict:
    return {"config": config, "measure": measure, "run": run, "load1": load1,
            "value": round(float(value), 4), "unit": unit, "target": target or "",
            "met": "" if met is None else ("yes" if met else "no"), "note": note}


def _summary(rows: list[dict], limit: float | None, target: str | None) -> dict:
    """Median over the runs of one measure, with the range and how many runs met the target."""
    values = [row["value"] for row in rows]
    middle = statistics.median(values)
    loads = [row["load1"] for row in rows]
    note = f"range {min(values):g}-{max(values):g}; load {min(loads):g}-{max(loads):g}"
    if limit is not None:
        note += f"; {sum(v <= limit for v in values)}/{len(values)} runs met"
    first = rows[0]
    return _row(first["config"], first["measure"], "median", statistics.median(loads), middle, first["unit"],
                target, None if limit is None else middle <= limit, note)


def tabulate(load_runs: list[dict], inproc: list[dict], http: dict, config: str) -> list[dict]:
    """The result rows of one configuration: one per run and measure, then a ``median`` row per
    measure that ran more than once."""
    groups: dict[str, list[dict]] = {}
    limits: dict[str, tuple[float | None, str | None]] = {}

    def add(measure, run, load1, value, unit, limit=None, target=None, note=""):
        met = None if limit is None else value <= limit
        row = _row(config, measure, run, load1, value, unit, target, met, note)
        groups.setdefault(measure, []).append(row)
        limits[measure] = (limit, target)

    memory = f"<= {MEMORY_TARGET_MB:g} MB"
    for index, run in enumerate(load_runs, 1):
        tag, load = f"load {index}", run["load1"]
        add("import mlflow.pyfunc", tag, load, run["import_s"], "s")
        add("load_model", tag, load, run["load_s"], "s", LOAD_TARGET_S, f"<= {LOAD_TARGET_S:g} s")
        add("VmRSS after load", tag, load, run["rss_load_mb"], "MB", MEMORY_TARGET_MB, memory)
        add("VmRSS after predictions", tag, load, run["rss_predict_mb"], "MB", MEMORY_TARGET_MB, memory)
        add("VmHWM after predictions", tag, load, run["hwm_predict_mb"], "MB", MEMORY_TARGET_MB, memory)
    for index, run in enumerate(inproc, 1):
        tag, load = f"in-process {index}", run["load1"]
        for name, label in (("bare_nomask", "bare Q@p + top-k, no mask"),
                            ("bare", "bare Q@p + seen mask + top-k"),
                            ("model", "PythonModel.predict"), ("pyfunc", "pyfunc predict")):
            for q in (50, 90, 99):
                add(f"{label} p{q}", tag, load, _pct(run[name], q), "ms",
                    note=f"{run['users']} users, k={K}")
        ratio = _pct(run["pyfunc"], 50) / _pct(run["bare"], 50)
        add("pyfunc / bare (masked), medians", tag, load, ratio, "x", RATIO_TARGET, f"<= {RATIO_TARGET:g}",
            note=f"lists differing from bare: {run['mismatches']}")
        add("pyfunc / bare (no mask), medians", tag, load,
            _pct(run["pyfunc"], 50) / _pct(run["bare_nomask"], 50), "x")
    add("server start to /ping", "http", http["ready_load1"], http["ready_s"], "s")
    for index, run in enumerate(http["passes"], 1):
        tag, load, n = f"http {index}", run["load1"], len(run["latencies"])
        add("HTTP p50", tag, load, _pct(run["latencies"], 50), "ms", note=f"{n} requests")
        add("HTTP p90", tag, load, _pct(run["latencies"], 90), "ms", note=f"{n} requests")
        add("HTTP p99", tag, load, _pct(run["latencies"], 99), "ms", P99_TARGET_MS,
            f"<= {P99_TARGET_MS:g} ms", note=f"{n} requests")
        add("HTTP max", tag, load, max(run["latencies"]) * 1e3, "ms", note=f"{n} requests")
        add("HTTP server CPU per request", tag, load, run["server_cpu_ms"], "ms",
            note="mean user+system CPU of the server's processes (clock ticks of 10 ms, over the whole run)")
    for name, bad in http["bad"].items():
        groups.setdefault(f"bad payload: {name}", []).append(
            _row(config, f"bad payload: {name}", "http", bad["load1"], bad["status"], "HTTP status", "400",
                 bad["status"] == 400, f"{bad['seconds'] * 1e3:.1f} ms; ...{bad['message'][-110:]}"))
    add("server RSS after requests", "http", http["passes"][-1]["load1"] if http["passes"] else 0.0,
        http["server_rss_mb"], "MB", MEMORY_TARGET_MB, memory, note="all processes of the server")
    rows = []
    for measure, group in groups.items():
        rows.extend(group)
        if len(group) > 1:
            rows.append(_summary(group, *limits[measure]))
    return rows


COLUMNS = ("date", "scale", "config", "measure", "run", "load1", "value", "unit", "target", "met", "note")


def write_results(rows: list[dict], base: Path, context: dict) -> None:
    """``base.csv`` (every row) and ``base.md`` (how it was measured, the medians, every run)."""
    base.parent.mkdir(parents=True, exist_ok=True)
    with open(base.with_suffix(".csv"), "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({"date": context["date"], "scale": context["scale_label"], **row})

    def table(selected):
        lines = ["| config | measure | run | load (1 min) | value | unit | target | met | note |",
                 "| --- | --- | --- | ---: | ---: | --- | --- | --- | --- |"]
        for row in selected:
            note = " ".join(row["note"].replace("|", "/").split())  # one table line, whatever the message
            lines.append(f"| {row['config']} | {row['measure']} | {row['run']} | {row['load1']:g} "
                         f"| {row['value']:g} | {row['unit']} | {row['target']} | {row['met']} | {note} |")
        return "\n".join(lines)

    missed = [row for row in rows if row["met"] == "no"]
    # the summary: each measure's median row, or its only row when it ran once
    with_median = {(row["config"], row["measure"]) for row in rows if row["run"] == "median"}
    headline = [row for row in rows
                if row["run"] == "median" or (row["config"], row["measure"]) not in with_median]
    bad_payloads = ", ".join(f"`{json.dumps(payload)}`" for payload in BAD_PAYLOADS.values())
    text = f"""# Serving benchmark: `recsys/serving.py` as an MLflow pyfunc

Written by `experiments/bench_serving.py` (its docstring says what each part measures) on
{context['date']}.

- Command: `{context['command']}`
- Scale: {context['scale_label']} ({context['seen_pairs']:,} seen pairs, median
  {context['seen_median']:g} and max {context['seen_max']:,} per user); model directory
  `{context['model_dir']}` (reused when present: the page cache was warm for every load).
- Machine: {context['machine']}; load average when the script started: {context['start_load']}.
  `load` in the tables is the 1-minute load average when that measurement started (2 cores,
  shared with other engineers' Spark jobs).
- Versions: {context['versions']}.
- BLAS (NumPy's, in this process at start): {context['blas']}. `config` says how many BLAS
  threads the measured processes used: `blas=default` is the library's own choice (one a core),
  `blas=N` sets {', '.join(BLAS_ENV)} to N for the load processes and the server, and
  `threadpoolctl.threadpool_limits(N)` for the in-process part.
- The factors are random float32 normals: a matrix-vector product, a masked write and a
  partition cost the same whatever the values, so the timings hold for a trained model. The
  seen pairs are MovieLens-shaped (log-normal per-user counts, skewed popularity), seeded.

How each figure was measured:

- `load_model`: `mlflow.pyfunc.load_model(<model dir>)` timed inside a fresh Python process
  ({context['repeats']} processes, one after another); `import mlflow.pyfunc` timed separately
  before it. `VmRSS` / `VmHWM` from `/proc/self/status` of that process right after the load and
  after {context['child_predicts']} single-user k={K} predictions of random known users.
- In-process (one process, the model loaded once): {context['users']} random known users per
  run, {context['repeats']} runs, after 20 warm-up users; per user the four variants run
  interleaved, order rotated. `bare`: `s = Q @ p; s[seen] = -inf; argpartition(-s, k)[:k]`,
  those k sorted; `no mask`: the same without the seen line; `PythonModel.predict`: the
  unwrapped model (MLflow's pyfunc wrapper left out); `pyfunc predict`:
  `PyFuncModel.predict(one-row frame, params={{"k": {K}}})`, the frame built before the clock.
  Every pyfunc list was compared with the bare one (note of the ratio rows).
- HTTP: `{context['serve_command']}`; 20 warm-up requests, then {context['repeats']} runs of
  {context['requests']} sequential POSTs `{{"dataframe_records": [{{"userId": u}}], "params":
  {{"k": {K}}}}}` on one kept-alive `http.client` connection from the benchmark's process (random
  known users; each answer checked: HTTP 200, {K} rows of that user). Latency = send to last
  byte read. `server CPU per request`: the CPU time (user + system, `/proc/<pid>/stat`) of the
  server's process group over a run, divided by its requests. Then the bad payloads
  {bad_payloads} (the note shows the end of the answer's message).

## Summary (median over runs; the range and loads are in the note)

{table(headline)}

Targets missed: {', '.join(f"{r['measure']} ({r['config']}, {r['run']}: {r['value']:g} {r['unit']}, "
                             f"load {r['load1']:g})" for r in missed) or 'none'}.

## Every run

{table(rows)}
"""
    base.with_suffix(".md").write_text(text, encoding="utf-8")


# ---------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> list[dict]:
    """Parse ``argv`` (see ``--help``), build or reuse the model, measure, write the results;
    returns the result rows (dicts with the CSV's columns but ``date`` and ``scale``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true",
                        help=f"{SMALL.n_users} users x {SMALL.n_movies} movies x rank {SMALL.rank}, "
                             "fewer runs: a smoke run in under a minute")
    parser.add_argument("--scratch", type=Path, default=DEFAULT_SCRATCH,
                        help="where the generated factors and model go (reused when present)")
    parser.add_argument("--results", type=Path, default=None,
                        help="results path without suffix (.md and .csv are written); default "
                             f"{DEFAULT_RESULTS.relative_to(ROOT)}, or <scratch>/small-results with --small")
    parser.add_argument("--repeats", type=int, default=None, help="load processes and latency runs (full: 3)")
    parser.add_argument("--users", type=int, default=None, help="users per in-process run (full: 500)")
    parser.add_argument("--requests", type=int, default=None, help="HTTP requests per run (full: 1000)")
    parser.add_argument("--warmup", type=int, default=20, help="HTTP warm-up requests")
    parser.add_argument("--child-predicts", type=int, default=None,
                        help="predictions in each load process before its memory is read (full: 200)")
    parser.add_argument("--ready-timeout", type=float, default=300.0, help="seconds to wait for /ping")
    parser.add_argument("--mlflow", type=Path, default=Path(sys.executable).with_name("mlflow"),
                        help="the mlflow executable that serves (default: the one next to this python)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the users picked for requests")
    parser.add_argument("--blas-threads", default=None,
                        help="comma-separated BLAS thread settings to measure one after another: 'default' "
                             "(the library's own choice: one thread a core) or a count, set through "
                             f"{'/'.join(BLAS_ENV)} for the subprocesses and threadpoolctl in-process "
                             "(full: default,1; small: default)")
    parser.add_argument("--child-load", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_load:
        result = child_load(args.child_load, args.child_predicts or 0, args.seed)
        print("RESULT " + json.dumps(result), flush=True)
        return []
    mode = "small" if args.small else "full"
    for name, value in DEFAULTS[mode].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    for name, low in (("repeats", 1), ("users", 1), ("requests", 1), ("warmup", 0), ("child_predicts", 0)):
        if getattr(args, name) < low:
            parser.error(f"--{name.replace('_', '-')} must be >= {low}; got {getattr(args, name)}")
    try:
        configs = [None if item.strip() == "default" else int(item) for item in args.blas_threads.split(",")]
    except ValueError:
        parser.error(f"--blas-threads {args.blas_threads!r}: give 'default' or thread counts, "
                     "comma-separated")
    if any(threads is not None and threads < 1 for threads in configs):
        parser.error(f"--blas-threads {args.blas_threads!r}: a thread count must be >= 1")
    if not args.mlflow.is_file():
        parser.error(f"--mlflow {args.mlflow} does not exist (give the venv's bin/mlflow)")
    scale = SMALL if args.small else FULL
    results = args.results or (args.scratch / "small-results" / "serving" if args.small else DEFAULT_RESULTS)
    import mlflow
    import pandas as pd

    start_load = [round(x, 2) for x in os.getloadavg()]
    date = time.strftime("%Y-%m-%d %H:%M %Z")
    args.scratch.mkdir(parents=True, exist_ok=True)
    model_dir = build_model(args.scratch, scale)
    rows = []
    for threads in configs:
        config = "blas=default" if threads is None else f"blas={threads}"
        print(f"[bench_serving] --- {config}")
        env = dict(os.environ)
        if threads is not None:
            env.update({name: str(threads) for name in BLAS_ENV})
        load_runs = measure_load(model_dir, args.repeats, args.child_predicts, args.seed, env)
        inproc = measure_inprocess(model_dir, args.repeats, args.users, args.seed, threads)
        http = measure_http(model_dir, args.repeats, args.requests, args.warmup, args.seed, args.scratch,
                            args.ready_timeout, args.mlflow, env)
        rows.extend(tabulate(load_runs, inproc, http, config))
    meta = json.loads((model_dir / "artifacts" / "factors" / META_FILE).read_text())
    shown = " ".join(argv if argv is not None else sys.argv[1:])
    context = {
        "date": date,
        "scale_label": f"{scale.n_users:,} users x {scale.n_movies:,} movies x rank {scale.rank}",
        "seen_pairs": meta["n_seen_pairs"], "seen_median": meta["benchmark"]["seen_per_user_median"],
        "seen_max": meta["benchmark"]["seen_per_user_max"], "model_dir": model_dir,
        "command": f".venv/bin/python experiments/bench_serving.py {shown}".strip(),
        "serve_command": f"mlflow models serve -m {model_dir} --env-manager local -h 127.0.0.1 "
                         "-p <free port>",
        "machine": f"{os.cpu_count()} CPUs, {platform.platform()}", "start_load": start_load,
        "versions": f"Python {platform.python_version()}, MLflow {mlflow.__version__}, "
                    f"NumPy {np.__version__}, pandas {pd.__version__}",
        "repeats": args.repeats, "users": args.users, "requests": args.requests,
        "child_predicts": args.child_predicts, "blas": _blas_description(),
    }
    write_results(rows, results, context)
    print(f"[bench_serving] wrote {results.with_suffix('.md')} and {results.with_suffix('.csv')}")
    return rows


if __name__ == "__main__":
    main()

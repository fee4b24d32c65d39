"""What several jobs share: the split a job reads (made on first use), one ALS fitted and judged
on it, and the baselines every search is compared with."""

from __future__ import annotations

import time
import warnings

from recsys.core import fs
from recsys.core.constants import (
    DEFAULT_SPLIT_DIR,
    SPLIT_PARTS,
    TAG_SPLIT_REUSED,
)
from recsys.data.split import split_digest
from recsys.entry_points import BUNDLED
from recsys.mlops.tracking import (
    finite_metrics,
    log_json,
    log_spark_input,
    say,
)


def data_source(data: str | None) -> str | None:
    """``None``, ``""`` and ``"bundled"`` all mean the bundled ml-latest-small."""
    return None if not data or data == BUNDLED else data


def create_split(spark, data, split_dir, config, overwrite=False):
    from recsys.data.movielens import load_movielens
    from recsys.data.split import make_split

    start = time.time()
    ml = load_movielens(spark, data_source(data), progress=say)
    manifest, reused = make_split(spark, ml.ratings, config, split_dir, source=ml.source,
                                  source_checksum=ml.checksum, overwrite=overwrite, progress=say)
    say(f"[split] done in {time.time() - start:.1f}s ({'reused' if reused else 'written'})")
    return manifest, reused


def log_split(spark, manifest: dict, split_dir: str, reused: bool) -> None:
    """Log a split's counts, manifest and partitions (as dataset inputs) to the active run."""
    import mlflow

    from recsys.data.split import load_split

    mlflow.set_tag(TAG_SPLIT_REUSED, str(reused).lower())
    metrics = {f"{part}_{k}": v for part, c in manifest["counts"].items() for k, v in c.items()}
    mlflow.log_metrics(metrics)
    log_json(manifest, "manifest.json")
    loaded = load_split(spark, split_dir)
    for part in SPLIT_PARTS:
        with warnings.catch_warnings():  # mlflow's int-column hint is about model inputs
            warnings.simplefilter("ignore")
            log_spark_input(loaded.part(part), path=fs.to_uri(fs.join(split_dir, part)), name=part,
                            digest=manifest["digests"][part].split("-", 1)[1][:16],
                            rows=int(manifest["counts"][part]["rows"]))


def ensure_split(spark, data, split_dir):
    """Read ``split_dir``, creating it with the default split when it is missing.

    A split made from another source than ``data`` is an error: results would not be
    comparable with what the user asked for.
    """
    from recsys.data.split import SplitConfig, load_split, read_manifest

    if read_manifest(spark, split_dir) is None:
        say(f"[split] {split_dir} has no split yet: creating the default one")
        create_split(spark, data, split_dir, SplitConfig())
    loaded = load_split(spark, split_dir)
    if data_source(data) is not None:
        from recsys.data.movielens import source_checksum

        checksum = source_checksum(spark, fs.local_path(data) if fs.is_local(data) else data)
        if checksum != loaded.manifest.get("source_checksum"):
            from recsys.core.errors import RecsysError

            raise RecsysError(
                f"split_dir {split_dir} was made from {loaded.manifest.get('source')}, not from "
                f"data={data}; run the split for this data (with its own split_dir) first")
    return loaded


def cached_split(spark, data, split_dir):
    """The split read once, train and validation cached and materialised, plus the bias fallback."""
    from recsys.models.bias import BiasBaseline

    loaded = ensure_split(spark, data, split_dir)
    train, validation = loaded.train.cache(), loaded.validation.cache()
    train.count(), validation.count()
    fallback = BiasBaseline().fit(train)
    fallback.user_bias.count(), fallback.item_bias.count()
    return loaded, train, validation, fallback


def judge_baselines(train, validation, test, fallback, k, relevance_threshold):
    """``(metrics, popularity)``: popularity (count) ranking metrics and the bias baseline's RMSE
    on validation and test, as ``baseline_<part>_<key>``, and the fitted popularity model (the
    served recommender's cold-start list)."""
    from recsys.evaluation.protocol import evaluate, rating_metrics
    from recsys.models.popularity import PopularityRecommender

    popularity = PopularityRecommender(kind="count").fit(train)
    out = {}
    for part, heldout in (("val", validation), ("test", test)):
        metrics = evaluate(popularity, train, heldout, k=k, relevance_threshold=relevance_threshold)
        metrics.update(rating_metrics(fallback.predict(heldout)))
        out.update(finite_metrics(metrics, f"baseline_{part}_"))
    return out, popularity


def model_split(spark, data, split_dir, meta: dict):
    """The split the model was trained on: ``split_dir`` if given (the default only when it holds
    a split), else the model's own; a split of other content is an error."""
    from recsys.core.errors import RecsysError
    from recsys.data.split import read_manifest

    chosen = split_dir or meta["split_dir"]
    if fs.same_path(split_dir, DEFAULT_SPLIT_DIR) and read_manifest(spark, split_dir) is None \
            and read_manifest(spark, meta["split_dir"]) is not None:
        chosen = meta["split_dir"]
    loaded = ensure_split(spark, data, chosen)
    if split_digest(loaded.manifest) != meta["split_digest"]:
        raise RecsysError(f"split_dir {chosen} (digest {split_digest(loaded.manifest)}) is not the split "
                          f"the model was trained on ({meta['split_dir']}, digest {meta['split_digest']}); "
                          "pass that split's directory as split_dir")
    return chosen, loaded

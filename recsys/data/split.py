"""Train/validation/test splits: strategies, and writing/reading them with a manifest.

A split directory holds ``train/``, ``validation/`` and ``test/`` (Parquet, rows sorted by
user and movie) and ``manifest.json`` (parameters, source checksum, counts, schema, content
digests, package version). It is written to a temporary sibling and renamed into place, so a
killed split never leaves a directory that looks complete. The sibling's name
(``<split_dir>.tmp-<host>-<pid>-<random>``) says who wrote it: the next split of the same
``split_dir`` deletes the ones written on its host by a process that no longer runs.

Strategies (every one deterministic: a row's place depends only on its ids, the seed and
the data, never on Spark's partitioning):

- ``random``: each rating independently, by a seeded hash of (userId, movieId).
- ``user``: per user, the seeded-hash order puts ``round(n*f)`` ratings in validation and
  test and at least one in train, so every held-out user keeps history in training.
- ``temporal``: per user, the latest ratings (timestamp, then movieId) go to test and the
  ones before them to validation.

Users with fewer than ``min_user_ratings`` ratings stay whole in train under every strategy.
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from recsys import __version__
from recsys.core import fs
from recsys.core.constants import (
    DEFAULT_MIN_USER_RATINGS,
    DEFAULT_SPLIT_FRACTIONS,
    DEFAULT_SPLIT_STRATEGY,
    ITEM_COL,
    SPLIT_PARTS,
    TIMESTAMP_COL,
    USER_COL,
)
from recsys.core.errors import RecsysError
from recsys.core.fs import remove_stale_temps, temp_dir_name
from recsys.core.params import SEED, param, validate
from recsys.core.progress import Progress, quiet

STRATEGIES = ("random", "user", "temporal")
MANIFEST = "manifest.json"
_HASH_BUCKETS = 1 << 30
_ROWS_PER_FILE = 2_000_000


@dataclass(frozen=True)
class SplitConfig:
    """Parameters of a split; exactly these are logged and stored in the manifest."""

    strategy: str = param(DEFAULT_SPLIT_STRATEGY, "How ratings are assigned to parts.", choices=STRATEGIES)
    """``random``, ``user`` or ``temporal``."""
    fractions: tuple[float, float, float] = param(DEFAULT_SPLIT_FRACTIONS,
                                                  "train,validation,test shares summing to 1.")
    """Train, validation and test shares; each in [0, 1), train > 0, summing to 1."""
    seed: int = SEED.field(help="Seed of the hash that orders ratings.")
    """Seed of the hash that orders ratings (unused by ``temporal`` except for ties: none)."""
    min_user_ratings: int = param(DEFAULT_MIN_USER_RATINGS, "Users with fewer ratings stay whole in train.",
                                  low=0)
    """Users with fewer ratings than this stay whole in train."""

    def __post_init__(self):
        validate(self)
        fr = tuple(float(f) for f in self.fractions)
        object.__setattr__(self, "fractions", fr)
        if len(fr) != 3 or any(not (0.0 <= f < 1.0) for f in fr) or fr[0] <= 0:
            raise RecsysError(
                f"fractions {self.fractions!r}: give three shares train,validation,test, each in "
                "[0, 1) with train > 0, e.g. 0.8,0.1,0.1")
        if abs(sum(fr) - 1.0) > 1e-6:
            raise RecsysError(f"fractions {','.join(map(str, fr))} sum to {sum(fr):g}; they must sum to 1")

    def as_params(self) -> dict:
        d = asdict(self)
        d["fractions"] = ",".join(f"{f:g}" for f in self.fractions)
        return d


def parse_fractions(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(p) for p in str(text).split(","))
    except ValueError as err:
        raise RecsysError(f"fractions {text!r}: expected three numbers like 0.8,0.1,0.1") from err
    if len(parts) != 3:
        raise RecsysError(f"fractions {text!r}: expected three numbers train,validation,test")
    return parts  # type: ignore[return-value]


@dataclass
class Split:
    """A split read back: three DataFrames of ratings and the manifest dict."""

    train: object
    validation: object
    test: object
    manifest: dict = field(default_factory=dict)
    path: str = ""

    def part(self, name: str):
        return {"train": self.train, "validation": self.validation, "test": self.test}[name]


# ---------------------------------------------------------------- assigning rows


def assign_parts(ratings, config: SplitConfig):
    """Add a string column ``part`` (train/validation/test) to ``ratings``. Lazy."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    f_train, f_val, f_test = config.fractions
    u = (F.pmod(F.xxhash64(F.col(USER_COL), F.col(ITEM_COL), F.lit(config.seed)),
                F.lit(_HASH_BUCKETS)) / F.lit(float(_HASH_BUCKETS)))
    df = ratings.withColumn("_u", u)
    per_user = Window.partitionBy(USER_COL)
    df = df.withColumn("_n", F.count(F.lit(1)).over(per_user))

    if config.strategy == "random":
        part = (F.when(F.col("_u") < f_train, "train")
                .when(F.col("_u") < f_train + f_val, "validation")
                .otherwise("test"))
    else:
        order = ([F.col("_u"), F.col(ITEM_COL)] if config.strategy == "user"
                 else [F.col(TIMESTAMP_COL), F.col(ITEM_COL)])
        df = df.withColumn("_pos", F.row_number().over(per_user.orderBy(*order)) - 1)
        n = F.col("_n")
        n_test = F.round(n * f_test).cast("long")
        n_val = F.round(n * f_val).cast("long")
        # keep at least one rating of every user in train
        n_test = F.least(n_test, n - 1)
        n_val = F.least(n_val, n - 1 - n_test)
        n_train = n - n_val - n_test
        part = (F.when(F.col("_pos") < n_train, "train")
                .when(F.col("_pos") < n_train + n_val, "validation")
                .otherwise("test"))
    if config.min_user_ratings > 0:
        part = F.when(F.col("_n") < config.min_user_ratings, "train").otherwise(part)
    return df.withColumn("part", part).drop("_u", "_n", "_pos")


def content_digest(df) -> str:
    """An order-independent digest of a DataFrame's rows (sum and xor of row hashes)."""
    from pyspark.sql import functions as F

    h = F.xxhash64(*[F.col(c) for c in df.columns])
    row = df.agg(F.count(F.lit(1)).alias("n"),
                 F.sum(h.cast("decimal(38,0)")).alias("s"),
                 F.bit_xor(h).alias("x")).first()
    return f"{row['n']}-{int(row['s'] or 0) & ((1 << 64) - 1):016x}-{(row['x'] or 0) & ((1 << 64) - 1):016x}"


def split_digest(manifest: dict) -> str:
    """A short key of a split's content (its partitions' digests): equal digests, same test set."""
    import hashlib

    return hashlib.sha256(json.dumps(manifest.get("digests", {}), sort_keys=True).encode()).hexdigest()[:16]


def _stats(df) -> dict:
    from pyspark.sql import functions as F

    row = df.agg(F.count(F.lit(1)).alias("rows"),
                 F.countDistinct(USER_COL).alias("users"),
                 F.countDistinct(ITEM_COL).alias("items")).first()
    return {"rows": int(row["rows"]), "users": int(row["users"]), "items": int(row["items"])}


# ---------------------------------------------------------------- writing and reading


def read_manifest(spark, split_dir: str) -> dict | None:
    path = fs.join(split_dir, MANIFEST)
    if not fs.exists(spark, path):
        return None
    try:  # JSON only: nothing in a split directory is ever unpickled or executed
        manifest = json.loads(fs.read_text(spark, path))
    except (ValueError, UnicodeDecodeError) as err:
        raise RecsysError(f"{path} is not a valid recsys manifest (JSON expected: {err}); "
                          "delete the split directory and run the split again") from err
    if not isinstance(manifest, dict):
        raise RecsysError(f"{path} is not a valid recsys manifest (a JSON object expected)")
    return manifest


def make_split(spark, ratings, config: SplitConfig, split_dir: str, *, source: str,
               source_checksum: str, overwrite: bool = False,
               progress: Progress = quiet) -> tuple[dict, bool]:
    """Split ``ratings`` into ``split_dir``; returns ``(manifest, reused)``.

    The same parameters and source on an existing split reuse it (``reused=True``);
    different ones raise unless ``overwrite``.
    """
    existing = read_manifest(spark, split_dir)
    params = config.as_params()
    if existing is not None:
        same = existing.get("params") == params and existing.get("source_checksum") == source_checksum
        if same and not overwrite:
            progress(f"[split] {split_dir} already holds this split: reusing it")
            return existing, True
        if not overwrite:
            raise RecsysError(
                f"split_dir {split_dir} holds a split with other parameters or source "
                f"(there: {existing.get('params')}, source {existing.get('source_checksum')}; "
                f"asked: {params}, source {source_checksum}); pass --overwrite to replace it "
                "or choose another split_dir")
    elif fs.exists(spark, split_dir) and fs.listdir(spark, split_dir) and not overwrite:
        raise RecsysError(
            f"split_dir {split_dir} exists, is not empty and is not a recsys split "
            "(no manifest.json); choose another split_dir or pass --overwrite")

    tmp = temp_dir_name(split_dir)
    try:
        fs.mkdirs(spark, tmp)
    except Exception as err:  # OSError locally, a Py4J error from Hadoop file systems
        raise RecsysError(f"split_dir {split_dir} is not writable: cannot create {tmp} "
                          f"({str(err).splitlines()[0][:300]})") from err
    fs.delete(spark, tmp)
    remove_stale_temps(spark, split_dir, complete_marker=MANIFEST, what="split", progress=progress)
    assigned = assign_parts(ratings, config).persist()
    try:
        total = assigned.count()
        progress(f"[split] {config.strategy} split of {total:,} ratings -> {split_dir}")
        counts, digests = {}, {}
        for name in SPLIT_PARTS:
            part = assigned.where(assigned.part == name).drop("part")
            n_files = max(1, math.ceil(total / _ROWS_PER_FILE))
            (part.repartition(n_files, USER_COL).sortWithinPartitions(USER_COL, ITEM_COL)
             .write.parquet(fs.to_uri(fs.join(tmp, name))))
            written = spark.read.parquet(fs.to_uri(fs.join(tmp, name)))
            counts[name] = _stats(written)
            digests[name] = content_digest(written)
            progress(f"[split]   {name}: {counts[name]['rows']:,} ratings, "
                     f"{counts[name]['users']:,} users, {counts[name]['items']:,} movies")
        manifest = {
            "params": params,
            "source": source,
            "source_checksum": source_checksum,
            "counts": counts,
            "input": _stats(ratings),
            "digests": digests,
            "schema": [{"name": f.name, "type": f.dataType.simpleString()}
                       for f in ratings.schema.fields],
            "recsys_version": __version__,
            "spark_version": spark.version,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        if sum(c["rows"] for c in counts.values()) != manifest["input"]["rows"]:
            raise RuntimeError("split lost or duplicated rows: this is a bug, please report it")
        fs.write_text(spark, fs.join(tmp, MANIFEST), json.dumps(manifest, indent=2))
        old = None
        if fs.exists(spark, split_dir):
            old = f"{split_dir.rstrip('/')}.old-{uuid.uuid4().hex[:8]}"
            fs.rename(spark, split_dir, old)
        fs.mkdirs(spark, fs.parent(split_dir))
        fs.rename(spark, tmp, split_dir)
        if old:
            fs.delete(spark, old)
        return manifest, False
    finally:
        assigned.unpersist()
        if fs.exists(spark, tmp):
            fs.delete(spark, tmp)


def load_split(spark, split_dir: str) -> Split:
    """Read a split directory written by :func:`make_split`."""
    manifest = read_manifest(spark, split_dir)
    if manifest is None:
        raise RecsysError(f"split_dir {split_dir} has no manifest.json: it is not a complete "
                          "split; run `mlflow run . -e split` (or pass the right split_dir)")
    parts = {name: spark.read.parquet(fs.to_uri(fs.join(split_dir, name))) for name in SPLIT_PARTS}
    return Split(manifest=manifest, path=split_dir, **parts)

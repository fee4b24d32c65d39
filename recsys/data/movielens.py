"""Reading MovieLens "latest" releases: a zip or a folder, local or any Hadoop URI.

``load_movielens(spark, source)`` returns typed DataFrames for ratings, movies and, when
present, tags, links, genome-scores and genome-tags. ``source=None`` means the bundled
``ml-latest-small`` (GroupLens' official archive, shipped with its README.txt licence).

The first read of a source validates every row and converts the CSVs to Parquet in a cache
keyed by the source's checksum (``RECSYS_CACHE_DIR``, default ``~/.cache/recsys`` for local
sources and ``<source's folder>/.recsys-cache`` for remote ones). Zip members are streamed
to disk, never held whole in memory; the full ``ml-latest`` (891 MB ratings.csv) is read by
Spark in parallel like any CSV. Later reads of the same source go straight to the Parquet.

Every problem is a :class:`~recsys.errors.DataValidationError` naming the file, column and
line, and what is allowed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
import zipfile
from dataclasses import dataclass
from importlib import resources

from recsys.core import fs
from recsys.core.constants import ITEM_COL, MAX_RATING, MIN_RATING, RATING_COL, TIMESTAMP_COL, USER_COL
from recsys.core.errors import DataValidationError
from recsys.core.progress import Progress, quiet

CACHE_FORMAT_VERSION = 1
#: Written last, inside the staging folder before its rename: an entry without it is incomplete.
DONE_MARKER = "_RECSYS_DONE.json"
MAX_EXAMPLES = 3

# name -> (required?, [(column, type, nullable)]). Types are Spark SQL names.
TABLES: dict[str, tuple[bool, list[tuple[str, str, bool]]]] = {
    "ratings": (True, [(USER_COL, "int", False), (ITEM_COL, "int", False),
                       (RATING_COL, "double", False), (TIMESTAMP_COL, "bigint", False)]),
    "movies": (True, [(ITEM_COL, "int", False), ("title", "string", False),
                      ("genres", "string", False)]),
    "tags": (False, [(USER_COL, "int", False), (ITEM_COL, "int", False), ("tag", "string", True),
                     (TIMESTAMP_COL, "bigint", False)]),
    # A few real movies have no TMDb id: tmdbId may be empty.
    "links": (False, [(ITEM_COL, "int", False), ("imdbId", "int", False), ("tmdbId", "int", True)]),
    "genome-scores": (False, [(ITEM_COL, "int", False), ("tagId", "int", False),
                              ("relevance", "double", False)]),
    "genome-tags": (False, [("tagId", "int", False), ("tag", "string", False)]),
}
# Keys that must be unique within a table.
UNIQUE_KEYS = {
    "ratings": [USER_COL, ITEM_COL],
    "movies": [ITEM_COL],
    "links": [ITEM_COL],
    "genome-scores": [ITEM_COL, "tagId"],
    "genome-tags": ["tagId"],
}
ID_COLUMNS = {USER_COL, ITEM_COL, "tagId", "imdbId", "tmdbId"}


@dataclass
class MovieLens:
    """A loaded release. DataFrames are typed with the schemas in ``TABLES``."""

    ratings: object
    movies: object
    tags: object | None
    links: object | None
    genome_scores: object | None
    genome_tags: object | None
    source: str
    checksum: str
    parquet_dir: str


def bundled_source() -> str:
    """Path of the bundled ml-latest-small.zip."""
    return str(resources.files("recsys.data").joinpath("bundled/ml-latest-small.zip"))


def spark_schema(table: str):
    from pyspark.sql.types import StructField, StructType, _parse_datatype_string

    return StructType(
        [StructField(c, _parse_datatype_string(t), n) for c, t, n in TABLES[table][1]]
    )


# ---------------------------------------------------------------- source resolution + checksum


def _sha256_file(path: str, h=None):
    h = h or hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h


def source_checksum(spark, source: str) -> str:
    """``sha256:<hex>`` of a local zip (or of a local folder's CSVs, in name order);
    ``hadoop:<hex>`` of the Hadoop checksum, length and modification time for remote sources."""
    if fs.is_local(source):
        path = fs.local_path(source)
        if os.path.isdir(path):
            h = hashlib.sha256()
            for root, _dirs, files in sorted(os.walk(path)):
                for name in sorted(files):
                    if name.endswith(".csv"):
                        h.update(os.path.relpath(os.path.join(root, name), path).encode())
                        _sha256_file(os.path.join(root, name), h)
            return "sha256:" + h.hexdigest()
        return "sha256:" + _sha256_file(path).hexdigest()
    return "hadoop:" + hashlib.sha256(fs.fingerprint(spark, source).encode()).hexdigest()


def default_cache_dir(source: str) -> str:
    env = os.environ.get("RECSYS_CACHE_DIR")
    if env:
        return env
    if fs.is_local(source):
        return os.path.join(os.path.expanduser("~"), ".cache", "recsys")
    return fs.join(fs.parent(source), ".recsys-cache")


def _check_exists(spark, source: str) -> None:
    if not fs.exists(spark, source):
        raise DataValidationError(
            f"MovieLens source {source!r} does not exist: give a MovieLens 'latest' zip "
            "(e.g. ml-latest-small.zip) or the folder it unzips to, as a local path or a "
            "Hadoop URI (hdfs://, gs://, s3a://)"
        )


# ---------------------------------------------------------------- staging the CSVs


def _zip_members(zf: zipfile.ZipFile, source: str) -> dict[str, zipfile.ZipInfo]:
    """Map table name -> member for CSVs at the zip root or in one top-level folder."""
    found: dict[str, zipfile.ZipInfo] = {}
    for info in zf.infolist():
        parts = info.filename.rstrip("/").split("/")
        if info.is_dir() or len(parts) > 2 or not parts[-1].endswith(".csv"):
            continue
        table = parts[-1][: -len(".csv")]
        if table in TABLES:
            found[table] = info
    if "ratings" not in found:
        names = ", ".join(i.filename for i in zf.infolist()[:10])
        raise DataValidationError(
            f"{source}: no ratings.csv in the zip (found: {names or 'nothing'}); expected the "
            "MovieLens layout <folder>/ratings.csv, movies.csv, [tags.csv, links.csv, ...]"
        )
    return found


def extract_zip(local_zip: str, source: str, dest: str) -> dict[str, str]:
    """Stream the MovieLens CSVs out of a zip into ``dest``; returns table -> local path."""
    try:
        zf = zipfile.ZipFile(local_zip)
    except zipfile.BadZipFile as err:
        raise DataValidationError(
            f"{source}: not a readable zip file ({err}); the archive may be truncated or "
            "corrupted: download it again"
        ) from err
    out: dict[str, str] = {}
    with zf:
        for table, info in _zip_members(zf, source).items():
            target = os.path.join(dest, f"{table}.csv")
            try:
                with zf.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            except (zipfile.BadZipFile, EOFError, OSError) as err:
                if isinstance(err, OSError) and not isinstance(err, zipfile.BadZipFile) \
                        and err.errno is not None:
                    raise
                raise DataValidationError(
                    f"{source}: member {info.filename} is corrupt or truncated ({err})"
                ) from err
            out[table] = target
    return out


def _folder_tables(spark, source: str) -> dict[str, str]:
    """table -> path for a folder holding the CSVs directly or in one sub-folder."""
    names = fs.listdir(spark, source)
    base = source
    if "ratings.csv" not in names:
        subdirs = [n for n in names if fs.is_dir(spark, fs.join(source, n))
                   and "ratings.csv" in fs.listdir(spark, fs.join(source, n))]
        if len(subdirs) != 1:
            raise DataValidationError(
                f"{source}: no ratings.csv in this folder (found: {', '.join(names[:10]) or 'nothing'}); "
                "expected the MovieLens layout ratings.csv, movies.csv, [tags.csv, links.csv, ...]"
            )
        base = fs.join(source, subdirs[0])
        names = fs.listdir(spark, base)
    return {n[:-4]: fs.join(base, n) for n in names if n.endswith(".csv") and n[:-4] in TABLES}


# ---------------------------------------------------------------- validation


def _check_header(spark, table: str, path: str, shown: str) -> None:
    expected = [c for c, _, _ in TABLES[table][1]]
    line = fs.read_first_line(spark, path)
    if line is None or not line.strip():
        raise DataValidationError(f"{shown}: the file is empty; expected a header line "
                                  f"{','.join(expected)} and at least one row")
    header = [h.strip().strip('"').lstrip("\ufeff") for h in line.split(",")]
    if header != expected:
        missing = [c for c in expected if c not in header]
        extra = [c for c in header if c not in expected]
        detail = []
        if missing:
            detail.append(f"missing column(s): {', '.join(missing)}")
        if extra:
            detail.append(f"unexpected column(s): {', '.join(extra)}")
        if not detail:
            detail.append("columns are in the wrong order")
        raise DataValidationError(
            f"{shown}: header is {','.join(header)!r}; expected {','.join(expected)!r} "
            f"({'; '.join(detail)})"
        )


def _problems(table: str):
    """[(name, Column predicate true on a bad row, message)] for a string-typed frame."""
    from pyspark.sql import functions as F

    checks = [("malformed", F.col("_corrupt").isNotNull(),
               f"wrong number of fields (expected {len(TABLES[table][1])}) or broken quoting")]
    for col, typ, nullable in TABLES[table][1]:
        raw = F.col(col)
        empty = raw.isNull() | (F.trim(raw) == "")
        if not nullable:
            checks.append((f"{col}:null", F.col("_corrupt").isNull() & empty,
                           f"column {col} is empty (a value is required)"))
        if typ in ("int", "bigint", "double"):
            cast = raw.try_cast(typ)
            allowed = {"int": "an integer in -2147483648..2147483647",
                       "bigint": "an integer", "double": "a number"}[typ]
            checks.append((f"{col}:type", ~empty & cast.isNull(),
                           f"column {col} is not numeric: allowed is {allowed}"))
            if col in ID_COLUMNS:
                checks.append((f"{col}:range", cast <= 0,
                               f"column {col} must be a positive id (>= 1)"))
            if col == RATING_COL:
                bad = (cast < MIN_RATING) | (cast > MAX_RATING) | ((cast * 2) != F.floor(cast * 2))
                checks.append((f"{col}:range", bad,
                               f"column {col} must be {MIN_RATING}..{MAX_RATING} in half steps"))
        else:
            checks.append((f"{col}:encoding", raw.contains("\ufffd"),
                           f"column {col} is not valid UTF-8 text"))
    return checks


def _string_frame(spark, table: str, path: str, text_lines: bool = False):
    """The CSV with every column as a string plus ``_corrupt``; optionally with ``_line``."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType, StructField, StructType

    from recsys.core.spark import numbered_lines

    cols = [c for c, _, _ in TABLES[table][1]]
    schema = StructType([StructField(c, StringType(), True) for c in cols]
                        + [StructField("_corrupt", StringType(), True)])
    opts = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": "_corrupt", "encoding": "UTF-8"}
    if not text_lines:
        return spark.read.options(header="true", **opts).schema(schema).csv(path)
    # Error path only: number the lines so messages can point at them.
    lines = numbered_lines(spark, path)
    parsed = lines.where(F.col("_line") > 1).select(
        "_line", F.from_csv("_text", schema.simpleString(), opts).alias("r"))
    return parsed.select("_line", *[F.col(f"r.{c}").alias(c) for c in cols + ["_corrupt"]])


def csv_field_count(line: str) -> int:
    """Fields in one CSV line, counted as Spark's CSV reader counts them: a quoted comma
    (``"Rock, The (1996)"``) is inside its field, ``\\`` escapes a quote."""
    import csv

    return len(next(csv.reader([line], escapechar="\\"), []))


def _malformed_example(line_no: int, text: str | None, expected: int) -> str:
    """``line N: expected E fields, found F: <the line>`` (or broken quoting, when the count is right)."""
    text = text or ""
    found = csv_field_count(text)
    what = (f"expected {expected} fields, found {found}" if found != expected
            else f"{expected} fields but broken quoting")
    shown = text if len(text) <= 200 else text[:200] + "..."
    return f"line {line_no}: {what}: {shown}"


def _validate(spark, table: str, path: str, shown: str):
    """Validate a CSV and return it typed; raise with examples on the first problem kind."""
    from pyspark.sql import functions as F

    _check_header(spark, table, path, shown)
    raw = _string_frame(spark, table, path).cache()
    checks = _problems(table)
    counts = raw.agg(
        F.count(F.lit(1)).alias("_rows"),
        *[F.sum(pred.cast("int")).alias(name) for name, pred, _ in checks],
    ).first().asDict()
    if counts["_rows"] == 0:
        raw.unpersist()
        raise DataValidationError(f"{shown}: the file has a header but no rows")
    failed = [(name, pred, msg) for name, pred, msg in checks if counts[name]]
    if failed:
        raw.unpersist()
        name, pred, msg = failed[0]
        numbered = _string_frame(spark, table, path, text_lines=True)
        bad = numbered.where(pred).orderBy("_line").limit(MAX_EXAMPLES).collect()
        cols = [c for c, _, _ in TABLES[table][1]]
        if name == "malformed":  # the line as written: its parsed columns hide what is wrong
            examples = "; ".join(_malformed_example(r["_line"], r["_corrupt"], len(cols)) for r in bad)
        else:
            examples = "; ".join(
                f"line {r['_line']}: " + ",".join("" if r[c] is None else str(r[c]) for c in cols)
                for r in bad)
        more = f" (and {len(failed) - 1} other kind(s) of problem)" if len(failed) > 1 else ""
        raise DataValidationError(f"{shown}: {counts[name]} row(s) where {msg}; {examples}{more}")

    typed = raw.select(*[F.col(c).try_cast(t).alias(c) if t != "string" else F.col(c)
                         for c, t, _ in TABLES[table][1]])
    key = UNIQUE_KEYS.get(table)
    if key:
        dups = typed.groupBy(*key).count().where("count > 1")
        n_dups = dups.count()
        if n_dups:
            ex = dups.orderBy(*key).limit(MAX_EXAMPLES).collect()
            shown_ex = "; ".join(", ".join(f"{k}={r[k]}" for k in key) + f" ({r['count']} rows)"
                                 for r in ex)
            raw.unpersist()
            raise DataValidationError(
                f"{shown}: {n_dups} duplicate ({', '.join(key)}) key(s); each must appear once: "
                f"{shown_ex}")
    return typed, raw


# ---------------------------------------------------------------- public API


def load_movielens(spark, source: str | None = None, cache_dir: str | None = None,
                   progress: Progress = quiet) -> MovieLens:
    """Load (validating and caching on first use) a MovieLens release.

    ``source``: zip or folder, local path or Hadoop URI; ``None`` = bundled ml-latest-small.
    ``cache_dir``: where validated Parquet copies live (see module docstring).
    Returns a :class:`MovieLens` of typed DataFrames; raises ``DataValidationError``.
    """
    source = str(source) if source else bundled_source()
    if fs.is_local(source):
        source = fs.local_path(source)
    _check_exists(spark, source)
    checksum = source_checksum(spark, source)
    cache_root = cache_dir or default_cache_dir(source)
    key = f"v{CACHE_FORMAT_VERSION}-{checksum.replace(':', '-')[:40]}"
    target = fs.join(cache_root, key)
    done_marker = fs.join(target, DONE_MARKER)
    if not fs.exists(spark, done_marker):
        progress(f"[data] first read of {source}: validating and converting to Parquet in {target}")
        build_cache(spark, source, target, checksum)
    tables_present = json.loads(fs.read_text(spark, done_marker))["tables"]
    target_uri = fs.to_uri(target)

    def read(table):
        if table not in tables_present:
            return None
        return spark.read.schema(spark_schema(table)).parquet(fs.join(target_uri, table))

    return MovieLens(
        ratings=read("ratings"), movies=read("movies"), tags=read("tags"), links=read("links"),
        genome_scores=read("genome-scores"), genome_tags=read("genome-tags"),
        source=source, checksum=checksum, parquet_dir=target_uri,
    )


def build_cache(spark, source: str, target: str, checksum: str) -> None:
    staging = f"{target}.tmp-{uuid.uuid4().hex[:8]}"
    local_tmp = tempfile.mkdtemp(prefix="recsys-extract-")
    try:
        if fs.is_dir(spark, source):
            tables = _folder_tables(spark, source)
        else:
            local_zip = fs.local_path(source) if fs.is_local(source) \
                else fs.copy_to_local(spark, source, local_tmp)
            extracted = extract_zip(local_zip, source, local_tmp)
            if fs.is_local(staging):
                tables = extracted
            else:  # executors must read the CSVs from the shared file system
                tables = {}
                for table, path in extracted.items():
                    dst = fs.join(staging, "csv", f"{table}.csv")
                    fs.copy_from_local(spark, path, dst)
                    tables[table] = dst
        missing = [t for t, (required, _) in TABLES.items() if required and t not in tables]
        if missing:
            raise DataValidationError(
                f"{source}: missing {', '.join(m + '.csv' for m in missing)}; a MovieLens "
                "release has ratings.csv and movies.csv (tags.csv, links.csv, genome-* optional)")
        for table in TABLES:
            if table not in tables:
                continue
            shown = f"{source}: {table}.csv"
            typed, raw = _validate(spark, table, fs.to_uri(tables[table]), shown)
            typed.write.mode("error").parquet(fs.to_uri(fs.join(staging, table)))
            raw.unpersist()
        fs.delete(spark, fs.join(staging, "csv"))
        fs.write_text(spark, fs.join(staging, DONE_MARKER), json.dumps(
            {"source": source, "checksum": checksum, "tables": sorted(tables)}, indent=2))
        # Another job may have converted the same source (same checksum, same tables) while this
        # one did, and may be reading it now: keep its entry and drop ours.
        if fs.exists(spark, fs.join(target, DONE_MARKER)):
            return
        if fs.exists(spark, target):  # a stale, incomplete earlier attempt (no marker)
            fs.delete(spark, target)
        fs.mkdirs(spark, fs.parent(target))
        try:
            fs.rename(spark, staging, target)
        except OSError:  # another job renamed its entry first: keep it if it is complete
            if not fs.exists(spark, fs.join(target, DONE_MARKER)):
                raise
    finally:
        shutil.rmtree(local_tmp, ignore_errors=True)
        if fs.exists(spark, staging):
            fs.delete(spark, staging)

"""The MovieLens reader: the bundled data's known counts, and one fixture per error."""

from __future__ import annotations

import os
import zipfile

import pytest

from recsys.core import DataValidationError
from recsys.data import load_movielens, spark_schema
from tests.support.marks import fast_cases

MOVIES = ("movieId,title,genres\n1,Toy Story (1995),Comedy\n2,Heat (1995),Action\n"
          "3,\"Rock, The (1996)\",Action\n")
RATINGS = "userId,movieId,rating,timestamp\n1,1,4.0,100\n1,2,3.5,101\n2,1,5.0,102\n2,3,0.5,103\n"


@pytest.mark.slow
def test_bundled_counts(bundled):
    assert bundled.ratings.count() == 100_836
    assert bundled.ratings.select("userId").distinct().count() == 610
    assert bundled.ratings.select("movieId").distinct().count() == 9_724
    assert bundled.movies.count() == 9_742
    assert bundled.tags.count() == 3_683
    assert bundled.links.count() == 9_742
    assert bundled.genome_scores is None and bundled.genome_tags is None
    assert [(f.name, f.dataType) for f in bundled.ratings.schema] == [
        (f.name, f.dataType) for f in spark_schema("ratings")]
    assert bundled.checksum.startswith("sha256:")


@pytest.mark.slow
def test_bundled_values(bundled):
    from pyspark.sql import functions as F

    row = bundled.ratings.agg(F.min("rating"), F.max("rating"), F.avg("rating")).first()
    assert (row[0], row[1]) == (0.5, 5.0)
    assert row[2] == pytest.approx(3.5016, abs=1e-4)
    # quoted titles with commas survive
    assert bundled.movies.where("movieId = 1").first()["title"] == "Toy Story (1995)"
    # a few real movies have no TMDb id: kept as null, not dropped
    assert bundled.links.where("tmdbId IS NULL").count() == 8


@pytest.mark.slow
def test_reload_uses_cache(spark, bundled):
    again = load_movielens(spark, None, progress=lambda m: pytest.fail(f"rebuilt cache: {m}"))
    assert again.parquet_dir == bundled.parquet_dir


def test_a_second_conversion_keeps_the_entry_another_job_finished(spark, tmp_path):
    """Two jobs reading the same new source both convert it; the later one must not replace the
    entry the first finished (and may be reading), nor leave its staging copy behind."""
    from recsys.data import DONE_MARKER, build_cache

    folder = _folder(tmp_path)
    cache = tmp_path / "cache"
    first = load_movielens(spark, folder, cache_dir=str(cache), progress=lambda _m: None)
    (target,) = [p for p in cache.iterdir()]
    (target / "in-use-by-the-first-job").write_text("")
    marker = (target / DONE_MARKER).read_text()

    build_cache(spark, folder, str(target), first.checksum)  # the second job, which started earlier

    assert (target / "in-use-by-the-first-job").exists()
    assert (target / DONE_MARKER).read_text() == marker
    assert [p.name for p in cache.iterdir()] == [target.name]  # no staging sibling left
    assert load_movielens(spark, folder, cache_dir=str(cache), progress=lambda _m: None).ratings.count() == 4

    # an entry without the marker is an interrupted attempt: it is replaced
    (target / DONE_MARKER).unlink()
    build_cache(spark, folder, str(target), first.checksum)
    assert not (target / "in-use-by-the-first-job").exists()
    assert (target / DONE_MARKER).exists()
    assert [p.name for p in cache.iterdir()] == [target.name]


def _folder(tmp_path, ratings=RATINGS, movies=MOVIES, extra=None, encoding_bytes=None):
    d = tmp_path / "ml"
    d.mkdir()
    if ratings is not None:
        (d / "ratings.csv").write_text(ratings)
    if movies is not None:
        (d / "movies.csv").write_text(movies)
    for name, text in (extra or {}).items():
        (d / name).write_text(text)
    if encoding_bytes is not None:
        (d / "movies.csv").write_bytes(encoding_bytes)
    return str(d)


def test_good_folder_and_zip_agree(spark, tmp_path):
    folder = _folder(tmp_path)
    zpath = tmp_path / "ml.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("ml/ratings.csv", RATINGS)
        zf.writestr("ml/movies.csv", MOVIES)
    a = load_movielens(spark, folder, cache_dir=str(tmp_path / "c1"), progress=lambda _m: None)
    b = load_movielens(spark, str(zpath), cache_dir=str(tmp_path / "c2"), progress=lambda _m: None)
    assert sorted(a.ratings.collect()) == sorted(b.ratings.collect())
    assert a.ratings.count() == 4 and a.movies.count() == 3
    assert b.movies.where("movieId = 3").first()["title"] == "Rock, The (1996)"


BAD_CASES = {
    "missing_ratings_column": (dict(ratings="userId,movieId,timestamp\n1,1,100\n"),
                               ["ratings.csv", "missing column(s): rating"]),
    "renamed_column": (dict(ratings="userId,movieId,score,timestamp\n1,1,4.0,100\n"),
                       ["ratings.csv", "missing column(s): rating", "unexpected column(s): score"]),
    "non_numeric_user": (dict(ratings=RATINGS + "abc,1,4.0,104\n"),
                         ["ratings.csv", "column userId is not numeric", "line 6"]),
    "non_numeric_rating": (dict(ratings=RATINGS + "3,1,good,104\n"),
                           ["column rating is not numeric", "line 6"]),
    "rating_out_of_range": (dict(ratings=RATINGS + "3,1,5.5,104\n"),
                            ["column rating must be 0.5..5.0 in half steps", "line 6"]),
    "rating_not_half_step": (dict(ratings=RATINGS + "3,1,3.7,104\n"),
                             ["half steps", "line 6: 3,1,3.7,104"]),
    "null_timestamp": (dict(ratings=RATINGS + "3,1,4.0,\n"),
                       ["column timestamp is empty", "line 6"]),
    "too_few_fields": (dict(ratings=RATINGS + "3,1\n"), ["wrong number of fields", "line 6"]),
    # a row lacking only its timestamp must not become a null timestamp; one field too many
    # must not be dropped silently; the count is the CSV parser's (quoted commas are one field)
    "short_row": (dict(ratings=RATINGS + "3,1,4.0\n"),
                  ["ratings.csv", "1 row(s) where wrong number of fields",
                   "line 6: expected 4 fields, found 3: 3,1,4.0"]),
    "long_row": (dict(ratings=RATINGS + "3,1,4.0,104,7\n"),
                 ["ratings.csv", "line 6: expected 4 fields, found 5: 3,1,4.0,104,7"]),
    "long_movie_row": (dict(movies=MOVIES + '4,"Heat, The (1995)",Action,extra\n'),
                       ["movies.csv",
                        'line 5: expected 3 fields, found 4: 4,"Heat, The (1995)",Action,extra']),
    "duplicate_pair": (dict(ratings=RATINGS + "1,2,4.0,200\n"),
                       ["duplicate (userId, movieId)", "userId=1, movieId=2 (2 rows)"]),
    "negative_id": (dict(ratings=RATINGS + "-4,1,4.0,104\n"), ["userId must be a positive id", "line 6"]),
    "huge_id": (dict(ratings=RATINGS + "99999999999,1,4.0,104\n"), ["userId is not numeric", "line 6"]),
    "empty_ratings": (dict(ratings=""), ["ratings.csv: the file is empty"]),
    "header_only": (dict(ratings="userId,movieId,rating,timestamp\n"), ["header but no rows"]),
    "missing_movies": (dict(movies=None), ["missing movies.csv"]),
    "duplicate_movie": (dict(movies=MOVIES + "1,Again,Drama\n"), ["movies.csv", "duplicate (movieId)"]),
    "non_utf8_title": (dict(encoding_bytes=b"movieId,title,genres\n1,Caf\xe9 (1999),Drama\n"),
                       ["movies.csv", "column title is not valid UTF-8", "line 2"]),
}


@pytest.mark.parametrize("case", fast_cases(sorted(BAD_CASES), {
    "missing_ratings_column", "non_numeric_user", "rating_not_half_step", "null_timestamp", "short_row",
    "long_movie_row", "duplicate_pair"}))
def test_bad_input_is_named(spark, tmp_path, case):
    kwargs, fragments = BAD_CASES[case]
    source = _folder(tmp_path, **kwargs)
    cache = tmp_path / "cache"
    with pytest.raises(DataValidationError) as info:
        load_movielens(spark, source, cache_dir=str(cache), progress=lambda _m: None)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)
    # nothing half-written is left in the cache
    assert not cache.exists() or os.listdir(cache) == []


@pytest.mark.parametrize("line, n", [
    ("1,2,3.5,4", 4), ("1,2,3.5", 3), ("1,2,3.5,4,", 5), ("", 0),
    ('3,"Rock, The (1996)",Action', 3), ('5,"Bird, The (""Oiseau"")",Drama', 3),
    ('6,"Say \\"Hi\\", Bob",Comedy', 3),
])
def test_fields_are_counted_as_the_csv_parser_does(line, n):
    from recsys.data import csv_field_count

    assert csv_field_count(line) == n


def test_missing_path(spark, tmp_path):
    with pytest.raises(DataValidationError, match="does not exist"):
        load_movielens(spark, str(tmp_path / "nope.zip"))


def test_zip_without_ratings(spark, tmp_path):
    zpath = tmp_path / "wrong.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("stuff/readme.txt", "hello")
    with pytest.raises(DataValidationError, match="no ratings.csv in the zip"):
        load_movielens(spark, str(zpath), cache_dir=str(tmp_path / "c"))


def test_truncated_zip(spark, tmp_path):
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as zf:
        zf.writestr("ml/ratings.csv", RATINGS * 1)
        zf.writestr("ml/movies.csv", MOVIES)
    data = good.read_bytes()
    bad = tmp_path / "truncated.zip"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataValidationError, match="truncated|corrupt"):
        load_movielens(spark, str(bad), cache_dir=str(tmp_path / "c"))

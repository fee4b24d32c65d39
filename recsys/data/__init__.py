"""Data in: the MovieLens reader (zip or folder, any URI, validated), the synthetic
MovieLens-shaped generator, and reproducible train/validation/test splits with their manifest."""

from recsys.data.movielens import (
    DONE_MARKER,
    build_cache,
    bundled_source,
    csv_field_count,
    extract_zip,
    load_movielens,
    source_checksum,
    spark_schema,
)
from recsys.data.split import (
    Split,
    SplitConfig,
    assign_parts,
    content_digest,
    load_split,
    make_split,
    parse_fractions,
    read_manifest,
    split_digest,
)
from recsys.data.synthetic import (
    GENERATOR_VERSION,
    TWINS_FILE,
    SyntheticConfig,
    generate,
    scaled_config,
    sidecar_paths,
)
from recsys.data.synthetic_users import (
    FIRST_TIMESTAMP,
    LAST_TIMESTAMP,
    POPULARITY_EXPONENT,
    POPULARITY_OFFSET,
    USER_SIGMA,
    movie_context,
    user_core,
    user_rows,
)

__all__ = ["DONE_MARKER", "FIRST_TIMESTAMP", "GENERATOR_VERSION", "LAST_TIMESTAMP", "POPULARITY_EXPONENT",
           "POPULARITY_OFFSET", "TWINS_FILE", "USER_SIGMA", "Split", "SplitConfig", "SyntheticConfig",
           "assign_parts", "build_cache", "bundled_source", "content_digest", "csv_field_count",
           "extract_zip", "generate", "load_movielens", "load_split", "make_split", "movie_context",
           "parse_fractions",
           "read_manifest", "scaled_config", "sidecar_paths", "source_checksum",
           "spark_schema", "split_digest", "user_core", "user_rows"]

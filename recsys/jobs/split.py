"""`split` entry point: MovieLens -> reproducible train/validation/test partitions."""

from __future__ import annotations

from recsys.core.params import check_bool
from recsys.entry_points import BUNDLED, declared
from recsys.jobs.common import (
    create_split,
    log_split,
)
from recsys.mlops.tracking import (
    log_new_params,
    name_run,
    spark_session,
    stage_run,
)


@declared("split")
def split(data, split_dir, strategy, fractions, seed, min_user_ratings, overwrite, spark_master, spark_conf):
    """`split` entry point: MovieLens -> ``split_dir/{train,validation,test}`` + manifest.

    Logs: params (strategy, fractions, seed, min_user_ratings, data, split_dir), metrics
    ``<part>_rows|users|items`` and ``split_seconds``, artifact ``manifest.json``, and the
    three partitions as dataset inputs. Returns the manifest.
    """

    from recsys.data.split import SplitConfig, parse_fractions

    with stage_run("split"):
        if isinstance(fractions, str):
            fractions = parse_fractions(fractions)
        config = SplitConfig(strategy=strategy, fractions=tuple(fractions), seed=seed,
                             min_user_ratings=min_user_ratings)
        name_run(f"split {config.strategy} {'/'.join(f'{f:g}' for f in config.fractions)} seed {config.seed}"
                 + (f" min_user_ratings={config.min_user_ratings}" if config.min_user_ratings else ""))
        overwrite = check_bool("overwrite", overwrite)
        log_new_params({**config.as_params(), "data": data or BUNDLED, "split_dir": split_dir})
        spark = spark_session(spark_master, spark_conf)
        manifest, reused = create_split(spark, data, split_dir, config, overwrite=overwrite)
        log_split(spark, manifest, split_dir, reused)
        return manifest

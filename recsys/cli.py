"""Command line: parses arguments only, one command per MLproject entry point.

``python -m recsys <command> --help`` lists every option. Errors the user can fix print one
line naming the problem and exit with status 1; the MLflow run is left FAILED.
"""

from __future__ import annotations

import functools
import os
import sys

import click

from recsys.core.errors import RecsysError
from recsys.entry_points import ENTRY_POINTS


def _spark_error_message(err: BaseException) -> str | None:
    """A one-line summary of a JVM/Spark failure, so a Java stack is never the only message."""
    name = type(err).__name__
    if name in ("Py4JJavaError",) or type(err).__module__.startswith("pyspark"):
        text = str(err).strip().splitlines()
        first = next((ln for ln in text if "Exception" in ln or "Error" in ln), text[0] if text else name)
        # The deepest "Caused by" is what a user can act on (disk full, permission denied, ...).
        causes = [ln.strip()[len("Caused by: "):] for ln in text if ln.strip().startswith("Caused by: ")]
        cause = f" (root cause: {causes[-1][:300]})" if causes else ""
        return f"Spark failed: {first.strip().lstrip(': ')[:400]}{cause}"
    return None


def run_job(func, **kwargs):
    """Call a job; turn user-fixable errors into one line and exit status 1."""
    try:
        return func(**kwargs)
    except RecsysError as err:
        raise click.ClickException(str(err)) from err
    except Exception as err:
        message = _spark_error_message(err)
        if message is None:
            raise
        raise click.ClickException(message) from err


#: How ``--help`` names a value of each kind of parameter.
METAVARS = {"int": "INTEGER", "float": "NUMBER", "bool": "BOOLEAN"}


def options(entry_point: str):
    """The click options of an entry point's declared parameters (``recsys.entry_points``), in
    order; every value reaches the job as a string, and the job validates it. A repeatable option
    (``--spark-conf``) also splits each value at ';'."""
    params = ENTRY_POINTS[entry_point]
    repeated = [p.name for p in params if p.multiple]

    def decorate(func):
        @functools.wraps(func)
        def wrapper(**kwargs):
            for name in repeated:
                kwargs[name] = [part.strip() for value in kwargs[name] for part in value.split(";")
                                if part.strip()]
            return func(**kwargs)

        for p in reversed(params):
            default = () if p.multiple else p.render()
            wrapper = click.option(p.cli_option, p.name, default=default, multiple=p.multiple,
                                   metavar=p.metavar or METAVARS.get(p.kind), show_default=bool(p.render()),
                                   help=p.help_text())(wrapper)
        return wrapper

    return decorate


class _Commands(click.Group):
    """Commands by their own names (``als-search``, ``pipeline``: what MLproject runs), and by their
    MLproject entry-point names too (``recsys als_search``, ``recsys main``), so the name a user
    reads in ``mlflow run . -e <name>`` works here. ``--help`` lists each command once, with the
    entry-point name beside it."""

    def get_command(self, ctx, cmd_name):
        return super().get_command(ctx, ALIASES.get(cmd_name, cmd_name))

    def resolve_command(self, ctx, args):
        # click names the command by what was typed; report the command's own name instead
        _, cmd, rest = super().resolve_command(ctx, args)
        return (cmd.name if cmd else None), cmd, rest


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """recsys: MovieLens recommendations and segmentation, tracked with MLflow."""
    # MLflow's artifact progress bar writes ~100 lines per model download into the job's log
    # (one per file of a Spark model); the jobs print their own progress. Set it to true to see it.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


#: MLproject entry point -> (command = the job's name in recsys.jobs, what it does).
COMMANDS = {
    "split": ("split", "Split MovieLens ratings into train/validation/test Parquet with a manifest."),
    "synthesize": ("synthesize",
                   "Write a synthetic MovieLens release (ratings, movies, tags, links) at any scale."),
    "baseline": ("baseline", "Popularity baseline and bias baseline, evaluated on the validation split."),
    "als": ("als", "Fit one ALS model, evaluate it on validation, log it to MLflow."),
    "als_search": ("als-search", "TPE search over ALS (hyperopt or optuna); one nested run per trial; "
                                 "resumable."),
    "promote": ("promote", "Register a search's best model; move @champion only if it beats the baseline "
                           "and the champion on test."),
    "twins": ("twins", "Movie twins: the most similar user pairs by Jaccard (exact by default, or MinHash "
                       "LSH), validated with Pearson correlations."),
    "recommend": ("recommend", "Top-K unseen movies for every user (or a list of users) from a registered "
                               "model, as Parquet."),
    "main": ("pipeline", "The `main` entry point: every stage in order on one split, as nested runs."),
}


def _add_command(entry_point: str, name: str, summary: str) -> None:
    @options(entry_point)
    def command(**params):
        from recsys import jobs

        run_job(getattr(jobs, name.replace("-", "_")), **params)

    short = summary if entry_point == name else f"{summary} Also: {entry_point}."
    main.command(name, help=summary, short_help=short)(command)


#: Entry-point name -> command name, where they differ (``als_search`` -> ``als-search``).
ALIASES = {entry_point: name for entry_point, (name, _) in COMMANDS.items() if entry_point != name}

for _entry_point, (_name, _summary) in COMMANDS.items():
    _add_command(_entry_point, _name, _summary)


if __name__ == "__main__":
    sys.exit(main())

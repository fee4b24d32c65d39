"""How many of the exact top pairs MinHash banding can be expected to catch (issue 26, part 3).

    python experiments/band_recall.py <exact twins.csv> [<twins.csv> ...] [--hashes 128,192,256]
        [--targets 0.5,0.45,0.4]

A pair of Jaccard ``s`` becomes a candidate of ``b`` bands of ``r`` rows with probability
``1 - (1 - s**r)**b`` (``recsys.twins.candidate_probability``); banded twins can only return
the exact top pairs that became candidates, so the mean of that probability over the exact top
``n_pairs`` is the recall to expect, and its minimum (at the 100th pair) the weakest link. For
each ``twins.csv`` of an exact run (columns ``jaccard``, e.g. the benchmark's runs of
``experiments/bench_twins.py``) and each ``n_hashes`` x ``target_similarity``, prints the bands
and rows ``recsys.twins.choose_bands`` picks, the expected recall and the 100th pair's
probability. No Spark: arithmetic on the listed Jaccards.
"""

from __future__ import annotations

import argparse
import csv

from recsys.twins import candidate_probability, choose_bands


def expected_recall(jaccards: list[float], bands: int, rows: int) -> tuple[float, float]:
    """(mean, minimum) over ``jaccards`` of the chance to be a candidate."""
    chances = [candidate_probability(j, bands, rows) for j in jaccards]
    return sum(chances) / len(chances), min(chances)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tables", nargs="+", help="twins.csv of an exact run")
    parser.add_argument("--hashes", default="128,192,256")
    parser.add_argument("--targets", default="0.5,0.45,0.4")
    args = parser.parse_args(argv)
    print("| table | pairs | 100th Jaccard | n_hashes | target | bands x rows | expected recall "
          "| 100th pair |")
    print("|---|---|---|---|---|---|---|---|")
    for table in args.tables:
        with open(table, encoding="utf-8") as fh:
            jaccards = [float(row["jaccard"]) for row in csv.DictReader(fh)]
        for n_hashes in (int(h) for h in args.hashes.split(",")):
            for target in (float(t) for t in args.targets.split(",")):
                bands, rows = choose_bands(n_hashes, target)
                mean, low = expected_recall(jaccards, bands, rows)
                print(f"| {table} | {len(jaccards)} | {min(jaccards):.4f} | {n_hashes} | {target} | "
                      f"{bands} x {rows} | {mean:.4f} | {low:.4f} |")


if __name__ == "__main__":
    main()

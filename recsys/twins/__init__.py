"""Customer segmentation, "movie twins": the top user pairs by Jaccard of their rated-movie sets
(:func:`find_twins`, configured by :class:`TwinsConfig`) and their Pearson validation against
random pairs (:func:`validate_twins`). The modules: :mod:`~recsys.twins.find` (config and the
two entry points), :mod:`~recsys.twins.candidates` (movie sets, MinHash banding, exact scoring
of candidates), :mod:`~recsys.twins.exact` (the exact top pairs), :mod:`~recsys.twins.stats`
(random pairs, Pearson, bootstrap and permutation test)."""

from recsys.twins.candidates import (
    approx_join_candidates,
    banded_candidates,
    candidate_probability,
    choose_bands,
    min_agreement,
    minhash_model,
    movie_sets,
    score_pairs,
    set_vectors,
    signatures,
    top_candidates,
    top_pairs,
    user_sets,
)
from recsys.twins.exact import default_tasks, exact_scored_pairs, exact_top_pairs, recall
from recsys.twins.find import METHODS, TwinsConfig, TwinsResult, find_twins, validate_twins
from recsys.twins.stats import compare_groups, pair_pearson, pearson_from_sums, summarize

__all__ = ["METHODS", "TwinsConfig", "TwinsResult", "approx_join_candidates", "banded_candidates",
           "candidate_probability", "choose_bands", "compare_groups", "exact_scored_pairs",
           "default_tasks", "exact_top_pairs", "find_twins", "min_agreement", "minhash_model",
           "movie_sets", "pair_pearson", "pearson_from_sums", "recall", "score_pairs",
           "set_vectors", "signatures", "summarize", "top_candidates", "top_pairs", "user_sets",
           "validate_twins"]

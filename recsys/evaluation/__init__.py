"""The evaluation protocol: RMSE over held-out ratings, ranking metrics (Precision/Recall/NDCG/MAP
at K) over each user's top K unseen movies (:mod:`~recsys.evaluation.protocol`), and the blocked
top-K selection with seen movies removed (:mod:`~recsys.evaluation.topk`)."""

from recsys.evaluation.protocol import (
    HeldOut,
    check_eval_params,
    evaluate,
    ranking_metrics,
    rating_metrics,
    recommend,
)
from recsys.evaluation.topk import seen_blocks, top_k_unseen, user_blocks

__all__ = ["HeldOut", "check_eval_params", "evaluate", "ranking_metrics", "rating_metrics", "recommend",
           "seen_blocks", "top_k_unseen", "user_blocks"]

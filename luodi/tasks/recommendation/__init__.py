"""Recommendation apps: rating prediction and top-k items by Bayesian matrix factorization (BPMF, Gibbs).

App keys used: data.path (u.data-style TSV without header: user, item, rating, timestamp; or csv/tsv with a
header), data.columns {user, item, rating}, data.options {items: item names file (u.item: id|title|...)},
data.split {valid: fraction, seed}, model.options (luodi.options.recommendation.RecommendationOptions:
factors, iterations, burn_in, thin, popularity), train.seed.

Modules, top down: task.py (RecommendationTask: fit, top-k, metrics, files), bpmf.py (the Gibbs sampler and
its checkpoints), ratings.py (ratings and item-name files).
"""

from luodi.tasks.recommendation.task import RecommendationTask, ndcg_at_k

__all__ = ["RecommendationTask", "ndcg_at_k"]

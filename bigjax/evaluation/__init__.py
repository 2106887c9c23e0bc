"""Evaluating generated digits: sample metrics and the classifier that scores them.

  metrics      frechet_distance, label_agreement, pairwise_diversity (float64 numpy, host side)
  classifier   a small MNIST CNN bigjax trains and checkpoints itself (train, load,
               make_predict); imported on use (`from bigjax.evaluation import classifier`), so
               the metrics need neither Flax nor Orbax
"""
from bigjax.evaluation.metrics import frechet_distance, label_agreement, pairwise_diversity

__all__ = ["frechet_distance", "label_agreement", "pairwise_diversity"]

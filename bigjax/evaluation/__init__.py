"""Measuring what a model does: sample metrics and the model FLOPs behind speed numbers.

metrics      frechet_distance, label_agreement, pairwise_diversity (float64 numpy, host side;
             scored with the features and labels of `bigjax.models.classifier`)
flops        analytic model FLOPs of the BigLearn-GAN models and of one training iteration,
             datasheet peaks and MFU; imported on use (`from bigjax.evaluation import flops`)
"""

from bigjax.evaluation.metrics import frechet_distance, label_agreement, pairwise_diversity

__all__ = ["frechet_distance", "label_agreement", "pairwise_diversity"]

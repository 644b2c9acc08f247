from .matching import distribution_matching_loss, gradient_matching_loss, learner_features
from .unrolled import learner_logits, unroll

__all__ = ["distribution_matching_loss", "gradient_matching_loss", "learner_features", "learner_logits", "unroll"]

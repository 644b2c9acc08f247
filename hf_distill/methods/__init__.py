from .unrolled import learner_logits, unroll

__all__ = ["learner_logits", "unroll"]

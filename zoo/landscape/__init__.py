"""Loss-landscape metrics: Hessian spectrum (`hessian`), CKA (`cka`), mode connectivity (`connectivity`)."""

from zoo.models.outputs import eval_mode

__all__ = ["eval_mode"]

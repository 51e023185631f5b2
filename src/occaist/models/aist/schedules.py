"""Learning-rate factors of the AIST optimisers (``torch.optim.lr_scheduler.LambdaLR``).

Picklable classes rather than lambdas, so the schedulers' state is saved in the checkpoint.
"""

from __future__ import annotations

#: ``constant`` (thesis 6.1.1: 2e-4 throughout) | ``linear`` (upstream's decay).
LR_POLICIES = ("constant", "linear")


class LinearDecay:
    """Upstream's ``linear`` LR factor for the 0-based epoch ``e`` (stepped at each epoch end).

    ``factor(e) = 1 - max(0, e + 1 - n_epochs) / (n_epochs_decay + 1)``: the base rate for
    the first ``n_epochs`` epochs, then a linear decay over ``n_epochs_decay`` epochs ending at
    ``base / (n_epochs_decay + 1)``. (Upstream's 2020 loop steps at epoch start and reaches 0;
    we keep the 2018 end-of-epoch convention so no epoch trains at rate 0.)
    """

    def __init__(self, n_epochs: int, n_epochs_decay: int) -> None:
        self.n_epochs = n_epochs
        self.n_epochs_decay = n_epochs_decay

    def __call__(self, epoch: int) -> float:
        return 1.0 - max(0, epoch + 1 - self.n_epochs) / float(self.n_epochs_decay + 1)


class ConstantFactor:
    """LR factor 1 (the thesis kept 2e-4 throughout training, section 6.1.1)."""

    def __call__(self, epoch: int) -> float:
        return 1.0


def lr_factor(policy: str, n_epochs: int, n_epochs_decay: int) -> LinearDecay | ConstantFactor:
    """The factor of ``policy`` (one of :data:`LR_POLICIES`)."""
    if policy == "linear":
        return LinearDecay(n_epochs, n_epochs_decay)
    if policy == "constant":
        return ConstantFactor()
    raise ValueError(f"lr_policy must be one of {LR_POLICIES}, got {policy!r}")

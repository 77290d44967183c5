"""What training diagnostics cost, and whether `train.diagnostics: auto` records them.

Their cost follows the activations, not the parameters: a record (`diagnostics.
DiagnosticsCallback.record`) keeps every layer's output of the probe batch for the gradient
tape and every activation layer's output for its statistics, so one record holds about
2 × 4 bytes × (the sum of the layer outputs per image, `forward.activation_sizes`) per probe
image. `plan` sizes the probe and decides `auto` from that estimate, before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from imgclf.forward import activation_sizes

if TYPE_CHECKING:
    import keras

# The probe batch every record measures: PROBE_IMAGES training images, fewer (down to
# MIN_PROBE_IMAGES) when their activations would pass PROBE_BUDGET bytes; `auto` switches
# diagnostics off when even MIN_PROBE_IMAGES do (EfficientNet-Lite0 at 224 px: 64 images held
# 6.8 GB in float64 before this budget existed).
PROBE_IMAGES = 64
MIN_PROBE_IMAGES = 16
PROBE_BUDGET = 256 << 20


@dataclass(frozen=True)
class Plan:
    """Whether a run records diagnostics, on how many probe images, and what they cost: the
    estimated activation memory of one record and why `auto` decided as it did."""

    enabled: bool
    probe_images: int
    estimated_bytes: int
    reason: str

    def line(self) -> str:
        """The one line training prints about it."""
        mb = self.estimated_bytes / 2**20
        if self.enabled:
            return (
                f"diagnostics: on, a probe batch of {self.probe_images} training images after "
                f"every epoch (about {mb:,.0f} MB of activations; {self.reason})"
            )
        return f"diagnostics: off ({self.reason})"


def plan(model: keras.Model, setting: bool | str = "auto") -> Plan:
    """Whether (and on how many images) to record diagnostics for `model`.

    Their cost follows the activations, not the parameters: a record keeps every layer's
    output for the gradient tape and every activation layer's output for its statistics, for
    each probe image, so one record holds about 2 × 4 bytes × (the sum of the layer outputs per
    image) × probe images (`forward.activation_sizes`). The probe is PROBE_IMAGES images, fewer
    when that estimate passes PROBE_BUDGET (down to MIN_PROBE_IMAGES). `auto` records them when
    the probe fits; True records them anyway (on at least MIN_PROBE_IMAGES); False never.

    Raises ValueError for a setting other than True, False or "auto"."""

    if not isinstance(setting, bool) and setting != "auto":
        raise ValueError(f"diagnostics setting must be true, false or 'auto'; got {setting!r}")
    per_image = 2 * 4 * activation_sizes(model)[1]
    fits = PROBE_BUDGET // per_image if per_image else PROBE_IMAGES
    probe = int(min(PROBE_IMAGES, max(MIN_PROBE_IMAGES, fits)))
    cost = probe * per_image
    if setting is False:
        return Plan(False, 0, 0, "train.diagnostics: false")
    if setting is True:
        return Plan(True, probe, cost, "train.diagnostics: true")
    if fits < MIN_PROBE_IMAGES:
        return Plan(
            False, 0, cost,
            f"auto: a probe of {probe} images would hold about {cost / 2**20:,.0f} MB of "
            f"activations, more than {PROBE_BUDGET >> 20} MB; train.diagnostics=true records "
            "them anyway",
        )  # fmt: skip
    return Plan(True, probe, cost, f"auto: within the {PROBE_BUDGET >> 20} MB probe budget")

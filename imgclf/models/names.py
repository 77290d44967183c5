"""The layer-name contract every imgclf model honours, in one place. Transfer learning, Grad-CAM,
export, re-use and the diagnostics find layers by these names, so every family builds with them:

    pixels -> [preprocess] -> ... -> [backbone] -> [avg_pool] -> features -> [head_dropout]
        -> probabilities

Hidden layers follow `models/blocks.py`'s pattern (`<name>`, `<name>_bn`, `<name>_act`,
`<name>_dropout`). Importing this module costs nothing (no Keras).
"""

INPUT = "pixels"  # the model's input: raw pixels 0..255, float32 [N, H, W, C]
PREPROCESS = "preprocess"  # BackbonePreprocess of a pretrained backbone
BACKBONE = "backbone"  # the nested model that transfer learning freezes and unfreezes
AVG_POOL = "avg_pool"  # global average pooling after a convolutional backbone
FEATURES = "features"  # what the head reads: an Identity on the penultimate tensor
HEAD_DROPOUT = "head_dropout"  # dropout before the output layer (model.dropout)
PROBABILITIES = "probabilities"  # the output Dense + softmax, float32 [N, classes]
HEAD = (HEAD_DROPOUT, PROBABILITIES)  # what a new head replaces, in order
ACTIVATION_SUFFIX = "_act"  # every hidden activation layer's name ends with it

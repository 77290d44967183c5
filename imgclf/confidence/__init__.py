"""Confidence a user can trust, fitted at the end of a run and carried into every export:

    calibration.py  temperature scaling (Guo et al., 2017) and the calibration figures (ECE)
    ood.py          the out-of-distribution statistics: class means, shared covariance,
                    Mahalanobis distance, the threshold (Lee et al., 2018)
    graph.py        the Keras model surgery that wires the score into the model's graph
    split_outputs.py each split through the trained model once (features, logits), shared
                    by the fit, the run's evaluation and the SavedModel's parity reference
    fit.py          `fit_confidence`: both fitted from those shared split outputs

Run files (ood.npz, metrics.json) are read only through `imgclf.runs`.
"""

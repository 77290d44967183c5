"""Training's steps, in the order a run meets them (`imgclf.train.train` calls the first three):

    prepare.py          step 1, before the first epoch: config, data, model, run directory
    phases.py           step 2: the phases of a run on one model (history.csv, callbacks)
    finish.py           step 3, after the last epoch: evaluation, confidence, plots, export

What the steps use:

    backend.py          the Keras backend a run trains on, and the few places it matters
    distribute.py       `train.distribute`: data-parallel training with tf.distribute
    optim.py            optimiser, learning-rate schedule (warm-up), clipping, label smoothing
    augment.py          `config.augment`: Keras random layers on training batches
                        (`imgclf-augment` previews them)
    transfer.py         the two-phase transfer schedule: frozen backbone, then fine-tune
    feature_cache.py    backbone features cached for the head phase (and augmented views)
    diagnostics.py      gradient, weight and activation statistics per layer
    diagnostics_cost.py what diagnostics would cost, decided before they run
    resume.py           `--resume RUN`: what an interrupted run needs to go on
    estimate.py         how long the job has left (printed, and progress.json for the app)
    progress.py         what a run costs: wall time, CPU time, peak memory per stage
"""

"""Hyperparameter search (`imgclf-tune`):

space.py     the search space file: dotted config keys and what to try, checked up front
search.py    KerasTuner's oracles choosing values; every trial a real run, ranked on validation
cli.py       the command line
"""

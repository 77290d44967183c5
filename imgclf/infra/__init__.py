"""Infrastructure every entry point shares, nothing about images or models:

errors.py     errors a user can fix (printed as one line, exit 2)
spreadsheet.py  CSV cells a spreadsheet opens as text, never as formulas (CSV injection)
bounded.py    readers with limits (size, nesting, YAML alias expansion) and error lines cut short
arguments.py  the command lines' argument parser (argparse, usage mistakes as one line)
console.py    TensorFlow's C++ start-up lines kept off the terminal
processes.py  who wrote a "process N is working on this" file, and whether it still runs
faults.py     failpoints for the fault-injection tests (IMGCLF_FAULT)
cache.py      imgclf's cache folder (derived files that can always be rebuilt)
"""

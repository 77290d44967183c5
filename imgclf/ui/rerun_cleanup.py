"""Streamlit's end-of-rerun clean-up, without its full garbage collection.

After every rerun (every click), Streamlit resets the state of the "problem modules" it finds
imported: `keras.backend.clear_session()` and matplotlib's `close("all")`. Keras' reset ends
with `gc.collect()`, a full collection over every object TensorFlow has created: 0.26 s of CPU
per rerun once a model is loaded, against 0.017 s for the whole rerun of the Train page without
it (2-core machine, 2026-12-06, `AppTest` reruns of app.py on a runs folder of two runs). The
app keeps its models in `st.cache_resource`, so nothing the collection would free is garbage.

`install()` replaces that clean-up with the same resets minus the collection:
`keras.backend.clear_session(free_memory=False)` (Keras' documented switch for this) and
`close("all")`. Python's own generational collector still runs as usual. On a Streamlit that
no longer has the hook, it does nothing and Streamlit's clean-up stays as it is.
"""

from __future__ import annotations

import sys

_MARK = "_imgclf_without_full_gc"


def _clean_problem_modules() -> None:
    keras = sys.modules.get("keras")
    if keras is not None:
        keras.backend.clear_session(free_memory=False)
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close("all")


setattr(_clean_problem_modules, _MARK, True)


def install() -> bool:
    """Use `_clean_problem_modules` (above) after every rerun of this process's Streamlit
    script runner; idempotent. True when it is in place."""
    from streamlit.runtime.scriptrunner import script_runner

    current = getattr(script_runner, "_clean_problem_modules", None)
    if current is None:
        return False
    if not getattr(current, _MARK, False):
        script_runner._clean_problem_modules = _clean_problem_modules
    return True

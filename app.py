"""imgclf's Streamlit app: `streamlit run app.py` (runs from `runs/` or `$IMGCLF_RUNS`);
`imgclf-app` starts the same app, on 127.0.0.1 from any folder.

The shell is `imgclf/ui/app.py` and the pages live in `imgclf/ui/pages/`; this file only starts
them."""

from imgclf.infra.console import quiet_tensorflow

# Before TensorFlow is first imported by a page: its C++ start-up lines stay off the server's
# terminal (a no-op on later reruns, and where TensorFlow is already loaded).
quiet_tensorflow()

from imgclf.ui.app import main  # noqa: E402  (after the filter is in place)

main()

"""imgclf's Streamlit app: `streamlit run app.py` (runs from `runs/` or `$IMGCLF_RUNS`).

The shell is `imgclf/ui/app.py` and the pages live in `imgclf/ui/pages/`; this file only starts
them."""

from imgclf.ui.app import main

main()

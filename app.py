"""imgclf's Streamlit app: `streamlit run app.py` (runs from `runs/` or `$IMGCLF_RUNS`).

The pages live in `imgclf/ui/`; this file only starts them."""

from imgclf.ui.app import main

main()

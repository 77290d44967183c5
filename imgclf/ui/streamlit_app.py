"""The script Streamlit runs for `imgclf-app` (the installed package's copy of the
repository's `app.py`)."""

from imgclf.ui.app import main

main()

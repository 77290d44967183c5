"""The Streamlit app: `app` (the shell and page routing) and the helpers the pages share.
`catalog`, `jobs` and `job_queue` import no Streamlit (the app's library side, testable alone);
the pages (`imgclf.ui.pages`) render what they return."""

"""The Streamlit app's page modules. `catalog` and `jobs` import no Streamlit (the app's
library side, testable alone); the page modules render what they return."""

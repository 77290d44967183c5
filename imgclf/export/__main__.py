"""`python -m imgclf.export` is `imgclf-export`."""

import sys

from imgclf.export.cli import main

sys.exit(main())

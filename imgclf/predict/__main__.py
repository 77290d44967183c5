"""`python -m imgclf.predict`: the same as `imgclf-predict`."""

import sys

from imgclf.predict.cli import main

sys.exit(main())

import sys

from imgclf.tuning.cli import main

sys.exit(main())

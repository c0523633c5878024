"""`python -m analyzer` is the `rstscope` command."""

import sys

from analyzer.cli import main

sys.exit(main())

"""`python -m maskwatch.cli`, as the tests and benchmarks start the command."""

import sys

from maskwatch.cli import main

sys.exit(main())

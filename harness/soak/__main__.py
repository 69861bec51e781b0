"""`python -m harness.soak`: run the soak from the repository root."""

import sys

from harness.soak.command import main

sys.exit(main())

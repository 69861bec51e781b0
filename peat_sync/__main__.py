import sys

from peat_sync.cli import main

sys.exit(main())

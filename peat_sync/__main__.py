import sys

from peat_sync.cli.main import main

sys.exit(main())

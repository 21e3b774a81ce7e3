import sys

from searchagent.cli import main

sys.exit(main())

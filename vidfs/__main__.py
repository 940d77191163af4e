import sys

from vidfs.cli import main

sys.exit(main())

import sys

from rater.cli.main import main

sys.exit(main())

"""`python -m datakit.archcheck [--deps | --write-deps]`."""

import sys

from datakit.archcheck import main

sys.exit(main())

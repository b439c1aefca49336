import sys

from glm45.cli import main

sys.exit(main())

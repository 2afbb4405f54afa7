"""``python -m utils.course`` (``make course``): see ``utils.course.runner``."""

import sys

from utils.course.runner import main

sys.exit(main())

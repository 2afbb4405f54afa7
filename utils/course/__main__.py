"""``python -m utils.course`` (``make course``): see ``utils.course.runner``."""

import sys

try:
    from utils.course.runner import main
except Exception as error:  # a setting read on import (COURSE_FRESH_SAMPLE) that names itself in one sentence
    if not hasattr(error, "_render_traceback_"):
        raise
    print(f"python -m utils.course: error: {error.args[0]}", file=sys.stderr)
    sys.exit(1)

sys.exit(main())

"""``python -m modelscope_handkp ...``: the ``modelscope-handkp`` command line (see :mod:`modelscope_handkp.cli`)."""
import sys

from .cli import main

if __name__ == '__main__':
    sys.exit(main())

"""Import me first in every benchmark script.

A script's folder comes first on sys.path, and this folder holds queue.py
(the queue benchmark), which would shadow the standard library's queue
module for everything, multiprocessing included.  Moving the folder to the
end of sys.path keeps the helpers here importable and the stdlib first.
"""

import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
_paths = [p for p in sys.path if os.path.abspath(p or ".") == _here]
for _p in _paths:
    sys.path.remove(_p)
sys.path.append(_here)

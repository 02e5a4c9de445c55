"""nskernel: Linux namespaces, first-class in Jupyter.

Kept import-light on purpose: the kernel launcher imports this package before it forks, and
everything it pulls in is paid for in start-up time and in the memory of launcher and init.
"""

from __future__ import annotations

__version__ = "0.1.0"

"""One %%isolate call (and nskernel.isolate): fork from the live kernel, enter the walls, run
the body under its locks, and carry its output and result back. :mod:`nskernel.cell.child`
reads as the child's life, top to bottom."""

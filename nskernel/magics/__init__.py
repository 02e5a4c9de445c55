"""The IPython magics: thin front ends (argument parsing, completion, %nsinfo) over
:mod:`nskernel.cell` and :mod:`nskernel.netlab`."""

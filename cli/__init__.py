"""The ``ftpipe`` command line: one argparse tree (``cli.main``), one module per command.

Command modules import only light modules at the top; Prefect, pandas and torch are imported inside the
handlers, so ``ftpipe --help`` and argument errors stay fast.
"""

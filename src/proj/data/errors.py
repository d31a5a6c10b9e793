"""DataError: a data file or a data setting that cannot work.

Its message names the path, row or key (`data.<key>`) and the fix. The data modules raise it while they are
built (config values, file listings) or in `setup` (file contents), always before the loop starts, so that the
command line reports it on one line with exit status 2 (proj.cli.run: a ValueError before the loop
is the config's). It is a ValueError, so code that builds a data module in Python catches it as before.
"""


class DataError(ValueError):
    """Bad data or a bad data setting: the message names where (path:row, data.<key>) and how to fix it."""

"""The error type for problems a person can fix, shared by every layer.

`UserError` means: the input, the build file, the environment or the order of steps is wrong, not the code.
Its message says what was wrong, where, and what to do (e.g. "no shards under OUT/build: run
`rnj run CONFIG` first"). The `rnj` command line prints it in one or two lines and exits with code 2, with
no traceback unless `--debug` is given; anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem the user can fix; the message names it and the fix."""

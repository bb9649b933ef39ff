"""The one exception for bad input (files, columns, ids, arguments, configurations).

`UserError` is a `ValueError`, so library callers can catch either; the commands turn it into one
`error: …` line and exit status 2 (`circuits.cli.run_cli`). Anything else that escapes is a bug and keeps
its traceback.
"""


class UserError(ValueError):
    """Bad input from the user. Its message is the whole story: one line, no traceback."""

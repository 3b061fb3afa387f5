"""User-facing errors: the CLI prints these as one line, without a traceback."""


class MonarchConvertError(Exception):
    """Something the user can fix (bad input, unsupported model, missing file, failed upload)."""

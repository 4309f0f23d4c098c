"""The one exception type for problems the user can fix.

The message always names the problem and the fix. The CLI prints it on one line without a
traceback; the widgets show it as a napari notification.
"""


class UserError(ValueError):
    """Bad input or a request the user can correct; the message says how."""

"""The one exception type calex raises for problems a user can fix.

Changing this module never changes a result: the workflow does not rerun
anything when it is edited (see ``calex_steps.workflow.code_deps``).
"""


class CalexError(RuntimeError):
    """An error a user can fix; entry points print it as one line and exit 1."""

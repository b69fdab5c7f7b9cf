"""The `tasksync-operator` command: tasksync_operator.main, or what to install to run it.

The operator's libraries (kopf, kubernetes-asyncio) are the `operator` extra, which a plain
`pip install tasksync` leaves out; the command still gets installed, and without them it would
die on `import kopf` with a traceback that does not say what is missing.
"""

from __future__ import annotations

import sys

# The top-level modules of the `operator` extra's distributions.
OPERATOR_EXTRA_MODULES = frozenset({"kopf", "kubernetes_asyncio"})
INSTALL_HINT = "pip install 'tasksync[operator]'"


def main() -> None:
    try:
        # Imported here, not at the top: this import is what fails without the extra.
        from tasksync_operator.main import main as run_operator
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in OPERATOR_EXTRA_MODULES:
            raise
        sys.exit(
            f"tasksync-operator: {exc.name} is not installed; the operator needs TaskSync's "
            f"'operator' extra: {INSTALL_HINT}"
        )
    run_operator()

"""Run one worker in this terminal until Ctrl-C (the same as `yadtq worker`).

    python examples/worker.py [name]

A custom operation is registered here, so tasks can name it ("greet"); a client that submits it
must import the same module (Config.imports / YADTQ_IMPORTS) so it can check the arguments.
The worker runs tasks in a child process that imports this file again, hence the __main__ guard.
"""

import logging
import sys

from yadtq import Worker, operation


@operation
def greet(name: str) -> str:
    """A user-defined operation: any importable function with JSON arguments and result."""
    return f"hello, {name}"


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    worker = Worker(name=sys.argv[1] if len(sys.argv) > 1 else None)
    worker.install_signal_handlers()  # SIGTERM / Ctrl-C: finish or hand back the task, then leave
    worker.run()

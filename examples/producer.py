"""Submit a few tasks and print their ids (the producer of the original design).

python examples/producer.py            # uses the services of `yadtq up` (or YADTQ_* settings)
python examples/producer.py --wait     # also wait for each result
"""

import sys

from yadtq import Client, TaskFailed

TASKS = [("add", 2, 3), ("mul", 6, 7), ("div", 1, 0), ("fibonacci", 30), ("is_prime", 7919)]

with Client() as client:
    handles = [(client.submit(op, *args), op, args) for op, *args in TASKS]
    for handle, op, args in handles:
        print(handle.id, op, args)
    if "--wait" in sys.argv:
        for handle, op, args in handles:
            try:
                print(f"{op}{tuple(args)} = {handle.result(timeout=60)}")
            except TaskFailed as failure:
                print(f"{op}{tuple(args)} failed: {failure.error}")

"""Show the status of one task, or the newest tasks and the workers (the "query tasks" example).

python examples/query_tasks.py             # the task and worker tables
python examples/query_tasks.py TASK_ID     # one task and its history
"""

import sys

from yadtq import Client

with Client() as client:
    if len(sys.argv) > 1:
        task = client.handle(sys.argv[1])
        print(task.status())
        for change in task.history():
            print(
                f"  {change['at']:.3f} {change['status']:<10} {change.get('worker') or ''} {change.get('note') or ''}"
            )
    else:
        columns = ["id", "op", "args", "status", "result", "error", "worker", "attempts"]
        print(client.tasks(limit=10)[columns].to_string(index=False))
        print()
        print(client.workers()[["name", "state", "processed", "failed", "last_heartbeat"]].to_string(index=False))

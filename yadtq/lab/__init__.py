"""The simulation lab: describe a load experiment once, then predict it, simulate it and run it.

- :mod:`~yadtq.lab.spec`: :class:`Experiment`, the JSON description of a run, and its schedule.
- :mod:`~yadtq.lab.theory`: queueing formulas (M/M/c and M/G/c for shared and pooled dispatch, a queue
  per worker for partitioned dispatch).
- :mod:`~yadtq.lab.simulate`: the same experiment as a discrete-event model (SimPy).
- :mod:`~yadtq.lab.run`: the same experiment on real workers, Kafka and Redis.
- :mod:`~yadtq.lab.result`: :class:`Result`, one shape for simulated and measured runs.
- :mod:`~yadtq.lab.plots`: the pictures a class looks at.
- :mod:`~yadtq.lab.sweep`: a grid of experiments, one tidy row each.
- :mod:`~yadtq.lab.probe`: the ``lab.work`` operation, which counts its own executions.
- :mod:`~yadtq.lab.scenarios`: experiments whose outcome is fixed by design (a crash that separates
  the three delivery semantics).
- :mod:`~yadtq.lab.detection`: failure detection, modelled (heartbeat interval and timeout against
  pauses) and as a real fault schedule.
- :mod:`~yadtq.lab.audit`: was anything lost, run twice or finished twice? (also for the
  reliability tests and the benchmarks)
- :mod:`~yadtq.lab.commands`: ``yadtq lab ...``.

Nothing is imported until it is used: ``yadtq`` builds its command line (``yadtq lab ...``
included) in every worker, and a worker has no use for numpy and pandas.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from yadtq.core._lazy import lazy_attributes

if TYPE_CHECKING:
    from yadtq.lab.result import Result
    from yadtq.lab.spec import Experiment, Fault, Schedule, SpecError
    from yadtq.lab.theory import Prediction, mgc, mmc, partitioned, predict

_HOME = {
    "Result": "yadtq.lab.result",
    "Experiment": "yadtq.lab.spec",
    "Fault": "yadtq.lab.spec",
    "Schedule": "yadtq.lab.spec",
    "SpecError": "yadtq.lab.spec",
    "Prediction": "yadtq.lab.theory",
    "mgc": "yadtq.lab.theory",
    "mmc": "yadtq.lab.theory",
    "partitioned": "yadtq.lab.theory",
    "predict": "yadtq.lab.theory",
}


__getattr__ = lazy_attributes(__name__, _HOME)


__all__ = [
    "Experiment",
    "Fault",
    "Prediction",
    "Result",
    "Schedule",
    "SpecError",
    "mgc",
    "mmc",
    "partitioned",
    "predict",
]

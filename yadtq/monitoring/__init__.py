"""Monitoring: the figures about the queue, computed once for every front end.

- :mod:`~yadtq.monitoring.monitor`: read models (counters, throughput, latency, busy spans, partitions);
- :mod:`~yadtq.monitoring.live`: a listener on the events channel that redraws at a bounded rate;
- :mod:`~yadtq.monitoring.plots`: the pictures, on matplotlib figures;
- :mod:`~yadtq.monitoring.report`: one self-contained HTML report;
- :mod:`~yadtq.monitoring.metrics`: the queue as Prometheus metrics.
"""

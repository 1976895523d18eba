"""The front ends: the terminal and the notebook, thin layers over the other parts.

- :mod:`~yadtq.frontends.cli`: the ``yadtq`` command (``python -m yadtq``);
- :mod:`~yadtq.frontends.tables`: DataFrames as terminal tables;
- :mod:`~yadtq.frontends.demo`: ``yadtq demo``;
- :mod:`~yadtq.frontends.watch`: ``yadtq watch``, a live terminal view;
- :mod:`~yadtq.frontends.dashboard`: the notebook dashboard (ipywidgets);
- :mod:`~yadtq.frontends.standalone`: ``yadtq dashboard``, the same as a web page (Voila).
"""

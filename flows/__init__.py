"""The Prefect flows of sstar and the ``sstar`` command line that runs them (the coordinator: no torch).

Modules:

* :mod:`flows.learn` — ``learn_catalog`` (the scheduled, catalog-wide job) and ``learn_concept`` (ad hoc).
* :mod:`flows.run_outputs` — what a catalog run leaves besides the concepts: metrics, report, summary, artifacts.
* :mod:`flows.child_runs` — the child flow runs of deployment mode, waited on with a deadline and run again when dead.
* :mod:`flows.compositions` — the catalog's compositions, rendered after its concepts are learned.
* :mod:`flows.sync` — Prefect's dual sync/async functions, called from synchronous code.
* :mod:`flows.prefect_setup` — the Prefect settings a fresh machine needs, applied where the user set none.
* :mod:`flows.stopping` — SIGTERM and Ctrl-C stop a run at its next step, with its end recorded.
* :mod:`flows.cli` — the ``sstar`` command line; :mod:`flows.commands` its workflow commands
  (``learn``, ``serve``, ``demo``); :mod:`flows.demo` the demo on embedded defaults.
"""

"""reports: the static HTML pages over an output root, made from the metrics (no Prefect, no torch).

Modules:

* :mod:`reports.run_page` — one page per run (``reports/<run_id>.html``, ``reports/latest.html``).
* :mod:`reports.dashboard` — one page over all runs (``reports/dashboard.html``) and the state it is made from.
* :mod:`reports.charts` — Chart.js configurations and the library itself, inlined from ``assets/``.
* :mod:`reports.style` — the style and cell formatting both pages share.

The pages are self-contained: no external CSS, fonts, scripts or CDN; links to results are relative.
"""

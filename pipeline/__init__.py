"""The pipeline behind run_pipeline.py: the stages (stages.py), the cache that decides what to reuse
(cache.py), one seed's run (runner.py), studies over seeds, label counts and settings (studies.py),
and their tables, figures and manifests (reports.py)."""

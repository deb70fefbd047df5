"""Development helpers, kept apart from the service: a throwaway PostgreSQL cluster
(`cluster`), deterministic demo data (`demo`) and the `make run` launcher (`run`).

They run only when asked (`python -m nexus_dev serve`, the test suite). `api` never imports
this package: the service without DATABASE_URL refuses to start instead of starting a demo.
"""

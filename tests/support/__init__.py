"""What the tests share and import: process helpers (`helpers`), where the code comes from
(`paths`), the configured databases (`backends`), real servers (`servers`), rows made by hand
(`rows`), the handles and clients the tests drive, and the programs the tests start
(``python -m tests.support.otel_app``, ``tests.support.otel_paths``, `django_suite`).
No test module imports another: what two of them share lives here."""

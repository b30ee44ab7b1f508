"""The auditor workspace (/audit/): pages, search, exports, session views over the ledger.

It sits on top of the layers (pyproject.toml, ``[tool.importlinter]``): it reads the ledger
(``portal.audit``), the catalog (``tiers``) and the sessions of ``streaming``, and nothing
below imports it.
"""

"""What ``make demo`` and the tests start: demo catalog, users, targets and web app.

Kept out of the production packages (``portal``, ``tiers``, ``streaming``), which never
import it (pyproject.toml, ``[tool.importlinter]``). A Django app only for its management
commands (``seed_demo``, ``demo_totp``).
"""

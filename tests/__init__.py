"""GTA's test suite. In every process that imports a test module (pytest, the supervisors and
scripts the tests start) the installed-mode check runs first: see `tests.paths`."""
from .paths import check_installed

check_installed()

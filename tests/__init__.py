"""GTA's test suite. In every process that imports a test module (pytest, the supervisors and
scripts the tests start) the installed-mode check runs first: see `tests.support.paths`."""
from .support.paths import check_installed

check_installed()

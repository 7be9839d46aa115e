"""The API starts without the libraries only some endpoints use: openpyxl (and numpy, which it pulls in),
python-docx, and Alembic (which serve runs in a child process) weigh some 35 MB of every API process. They are
imported where used; the export, import, migration and serve tests prove those paths still work."""

import subprocess
import sys

HEAVY = ("openpyxl", "numpy", "docx", "alembic", "mako")


def test_the_app_imports_no_spreadsheet_document_or_migration_library():
    code = f"import sys, api.main; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert result.stdout.strip() == "", f"imported at start-up: {result.stdout.strip()}"

"""The API starts without the libraries only some endpoints use: openpyxl (and numpy, which it pulls in) and
python-docx weigh some 25 MB of every API process's memory. They are imported where a file is written or
read; the export and import tests prove those endpoints still work."""

import subprocess
import sys

HEAVY = ("openpyxl", "numpy", "docx")


def test_the_app_imports_no_spreadsheet_or_document_library():
    code = f"import sys, api.main; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert result.stdout.strip() == "", f"imported at start-up: {result.stdout.strip()}"

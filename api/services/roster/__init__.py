"""花名册 — a school's roster: import from XLSX/CSV (all or nothing), export as XLSX, and the template.

- ``columns``: the column spec every part follows, and what the guardian columns mean for a child's links;
- ``files``: reading XLSX/CSV into rows of cells, writing the template, an export and CSV;
- ``parse``: each cell parsed and each row checked, as pure functions;
- ``plan``: what an import will do — rows matched to the children and classes on file, then the writes (pure);
- ``service``: import and export, the only module here that talks to the database.

Import from the module that defines a name; this package re-exports nothing.
"""

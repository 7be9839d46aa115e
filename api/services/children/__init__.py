"""一人一档 — the children's archive: a child's file and its life on the roster.

- ``rules``: who sees the full file, date and ID-number checks, the school year, events (pure);
- ``records``: enter, read, correct a file, reveal the ID number; who may write;
- ``search``: find children by name, school, class, status and flags;
- ``history``: a file's audited changes and roster events;
- ``lifecycle``: transfer, parents home or away, graduation, leaving, re-enrolment;
- ``promotion``: the end-of-year promotion of whole classes, as validate → plan → apply.

Import from the module that defines a name; this package re-exports nothing.
"""

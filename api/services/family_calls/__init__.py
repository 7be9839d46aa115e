"""亲情电话 — family calls: a school's lines and hours, availability, booking, the call's life, views, reminders.

``hours``, ``slots`` and ``rules`` are pure decisions (no I/O, table-driven tests); ``service`` is the only
module that talks to the database; ``views`` reads for the family, the teacher and the school; ``reminders``
tells families and head teachers before a call and when the school cancels.
"""

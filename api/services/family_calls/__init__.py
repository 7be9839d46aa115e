"""亲情电话 — family calls: a school's lines and hours, availability, booking, the call's life, views, reminders.

``hours``, ``slots`` and ``rules`` are pure decisions (no I/O, table-driven tests); ``lines`` sets up a school's
lines, hours, overrides, festival days and settings; ``service`` finds free slots, books and moves a call through
its life; ``views`` reads for the family, the teacher and the school; ``reminders`` queues messages on the shared
outbox; ``demo`` seeds the demo school.
"""

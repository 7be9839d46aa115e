"""Notifications — the durable outbox every domain sends through (incidents, family-call reminders, care
digests): :mod:`.outbox` queues a message (idempotent by its dedupe key), :mod:`.dispatch` claims, sends and
records it against :mod:`api.channels`, :mod:`.receipts` applies the providers' delivery receipts,
:mod:`.delivery` holds the pure state rules, and :mod:`.topics` lets a domain hear what became of its
messages. See docs/architecture.md, "Notifications: how another domain sends a message".
"""

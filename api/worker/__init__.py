"""The worker: the loop (:mod:`.loop`, ``liushou worker`` or in-process with ``serve``) that runs the
scheduler (:mod:`.scheduler`: due steps and parties of the emergency chain) and the outbox's dispatcher
(:mod:`api.services.notifications.dispatch`). It depends on the domains; no domain imports it. Everything
lives in PostgreSQL rows; see docs/escalation.md.
"""

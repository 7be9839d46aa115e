"""The escalation engine: a scheduler that advances each incident's chain, a dispatcher that sends the
messages through the channels, and the worker loop that runs both (``liushou worker``, or in-process with
``serve``). Everything lives in PostgreSQL rows; see docs/escalation.md.
"""

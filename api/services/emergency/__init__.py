"""应急机制 — the emergency domain: the 30-minute / 1-hour / 2-hour chain (docs/escalation.md).

- :mod:`.policy` — a county's policy and its duty contacts (值班)
- :mod:`.contacts` — whom each party is told through, resolved at the report
- :mod:`.decide` — pure: what a party does next, what a step's time asks for, the report's deadlines
- :mod:`.chain` — the one lock order, freezing the chain, moving steps and parties along
- :mod:`.notify` — what the chain queues on the outbox; :mod:`.texts` — what it says
- :mod:`.acknowledgements` — the rules for told; :mod:`.callbacks` — replies, keypresses, receipts
- :mod:`.incidents` — report, read, outcome, close; :mod:`.timeline` — written and read
- :mod:`.flows` — escalate now, add a contact, send again
"""

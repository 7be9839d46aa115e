"""Seeding of the deterministic demo county (青山县), for `liushou seed-demo`, `serve --demo` and tests.

Only the CLI and tests import this package (tests/test_import_graph.py holds it to that); nothing in it is
part of serving a request. `seed.seed_demo` makes the organisation and accounts, then runs each domain's
seeder in dependency order: `archive` (children and guardians drawn from `people`), `family` (a bound
WeChat family account), `escalation` (duty contacts and one incident replayed by the engine) and
`family_calls` (亲情电话: a phone and a video room with calls booked). `context`
holds what they share (fixed ids, `DemoContext`), so no seeder imports another.

Deliberately empty of imports: `api.demo.people` stays cheap to import for benchmarks and tests.
"""

"""Guardians of a child (在外务工家长, 委托监护人) and the family's own view.

- ``records``: the guardian as a person — read, corrected — and who may write; how guardians and links are shown;
- ``links``: a child's guardians and their emergency call order — list, add, change, reorder, end;
- ``invites``: guardian invites (家长邀请码);
- ``family``: the family's own view (家长端) of their children and their own details.

Import from the module that defines a name; this package re-exports nothing.
"""

"""Care work (结对帮扶, 谈心, 家访…): who is paired with each child and what was done for the child.

- ``contents``: what each kind of care record holds, checked per kind (pure);
- ``chain``: the hash chain of a school's care records — canonical hashing and verification (pure);
- ``scope``: which pairings and records a principal may see;
- ``limits``: a school's caps and edit window;
- ``pairings``: pair, end, help plans and progress notes; who is unpaired;
- ``records``: enter, correct within the window, amend after it, read (audited), verify a school's chain.

Import from the module that defines a name; this package re-exports nothing.
"""

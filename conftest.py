"""Loaded before any test module or the app: test-wide environment.

Passwords in the suite are throwaway, so argon2id runs at its cheapest parameters here (the cost is
configuration, ``VOLUBLE_PASSWORD_HASH_*``; production keeps argon2-cffi's defaults). Hashing at the
production cost was half of the suite's CPU time. Set the variables to override.
"""

import os

os.environ.setdefault("VOLUBLE_PASSWORD_HASH_TIME_COST", "1")
os.environ.setdefault("VOLUBLE_PASSWORD_HASH_MEMORY_KIB", "1024")
os.environ.setdefault("VOLUBLE_PASSWORD_HASH_PARALLELISM", "1")

"""Plumbing: the small mechanisms every Perseus component needs, written once.

One interruptible wait and one task group (`tasks`), one narrow set of
transient Redis errors (`errors`), one XREAD reply parser (`streams`), one
pid check and parent-death hook (`processes`), one registration of Lua
scripts per client (`scripts`), one reading of how full a server is
(`memory`), and opening connections (`connection`).
Retry delays are redis-py's `redis.backoff` policies, not a policy of our
own. Imports only `perseus_core.wire`.
"""

"""Work done beside the event loop in processes of its own: the full-load mapping pool (:mod:`.pool`).

Apart from :mod:`cdcstream.mapping` on purpose: mapping is pure functions over values, while this package
starts processes, talks to them over sockets and reads the cgroup's CPU limit to size itself.
"""

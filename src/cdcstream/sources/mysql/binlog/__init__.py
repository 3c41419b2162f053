"""The MySQL/MariaDB binary log, read by cdcstream itself, in the order the bytes flow.

* :mod:`.client` — the dump connection: a replica's handshake over PyMySQL, then raw events.
* :mod:`.events` — the common header, checksums, and the table of what happens to every event type.
* :mod:`.compression` — MariaDB's compressed events (zlib) and MySQL's transaction payloads (zstd).
* :mod:`.tablemap` — TABLE_MAP_EVENT, with the optional metadata (names, charsets, ENUM/SET members, keys).
* :mod:`.rowevents` — row events: column bitmaps and row images, partial images, partial JSON updates.
* :mod:`.values` — one decoder per column type; :mod:`.temporal` (dates and times), :mod:`.charsets` (text)
  and :mod:`.jsonb` (MySQL's JSON).
* :mod:`.gtid` — MySQL GTID sets.

Everything except :mod:`.client` is sans-IO: functions of bytes, tested from binlog files and built events.
"""

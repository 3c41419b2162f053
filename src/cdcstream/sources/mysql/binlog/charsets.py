"""Character sets: from the collation id a table map gives to the text the server itself would return.

The binlog carries CHAR/VARCHAR/TEXT values as the column's bytes, in the column's character set, and the table
map names that set by collation id. :class:`Charsets` maps the id to the set (the server's own list,
``information_schema.COLLATIONS``, read when the reader connects; PyMySQL's built-in table of MySQL's ids only
where no server was asked, i.e. in tests from binlog files) and the set to a decoder:

* UTF-8 (utf8mb4, utf8mb3), UTF-16/UTF-16LE/UTF-32/UCS-2 (big-endian on the wire, except utf16le), ASCII and
  latin1 are decoded here exactly as the server converts them to utf8mb4: MySQL's latin1 is Windows-1252 with
  the five bytes Windows leaves undefined (0x81, 0x8D, 0x8F, 0x90, 0x9D) mapped to the C1 controls U+0081....
* Every other single-byte set (latin2, cp1250, koi8r, armscii8, ...) is decoded with a 256-character table the
  server itself produces (``CONVERT(<all 256 bytes> USING <set>)`` to utf8mb4), fetched once per set by the
  reader: exact by construction.
* The multi-byte Asian sets (sjis, cp932, ujis, eucjpms, gbk, gb2312, gb18030, big5, euckr) are decoded with
  Python's codecs of the same standards.

Bytes a decoder cannot decode, and a set none of the above covers, stop the reader with an error naming the
column: a value is never replaced or guessed.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Mapping
from operator import methodcaller

from cdcstream.errors import DecodeError

TextDecoder = Callable[[bytes], str]

_UTF8 = ("utf8mb4", "utf8mb3", "utf8")
_CODECS = {
    "ascii": "ascii",
    "utf16": "utf-16-be",
    "utf16le": "utf-16-le",
    "utf32": "utf-32-be",
    "ucs2": "utf-16-be",
    "sjis": "shift_jis",
    "cp932": "cp932",
    "ujis": "euc_jp",
    "eucjpms": "euc_jis_2004",
    "gbk": "gbk",
    "gb2312": "gb2312",
    "gb18030": "gb18030",
    "big5": "big5",
    "euckr": "euc_kr",
}


def _latin1_table() -> str:
    chars = []
    for b in range(256):
        try:
            chars.append(bytes([b]).decode("cp1252"))
        except UnicodeDecodeError:
            chars.append(chr(b))  # MySQL maps Windows-1252's five holes to the C1 control of the same number
    return "".join(chars)


LATIN1_TABLE = _latin1_table()


def _table_decoder(table: str) -> TextDecoder:
    def dec(raw: bytes) -> str:
        return codecs.charmap_decode(raw, "strict", table)[0]

    return dec


def _codec_decoder(codec: str) -> TextDecoder:
    return methodcaller("decode", codec)  # a C-level call: this runs once per text value of every row


_utf8 = _codec_decoder("utf-8")


class Charsets:
    """Collation id -> character set name -> decoder.

    ``collations`` is the server's id -> set name list (None: PyMySQL's table of MySQL ids, for tests that have
    no server). ``single_byte`` fetches the server's 256-character table of a single-byte set (None: such sets
    cannot be decoded, which is an error where one is met).
    """

    def __init__(
        self,
        collations: Mapping[int, str] | None = None,
        single_byte: Callable[[str], str] | None = None,
    ) -> None:
        self._collations = dict(collations) if collations is not None else None
        self._single_byte = single_byte
        self._decoders: dict[str, TextDecoder | None] = {}

    def name(self, collation: int) -> str | None:
        """The character set of a collation id (None when unknown)."""
        if self._collations is not None:
            return self._collations.get(collation)
        import pymysql.charset  # here: the decoder needs PyMySQL only where no server was asked (tests)

        cs = pymysql.charset._charsets._by_id.get(collation)  # a private table, read only here
        return str(cs.name) if cs is not None else None

    def decoder(self, charset: str) -> TextDecoder | None:
        """The decoder of a character set; None for ``binary`` (the value is bytes)."""
        if charset == "binary":
            return None
        if charset in self._decoders:
            dec = self._decoders[charset]
            assert dec is not None
            return dec
        dec = self._make(charset)
        self._decoders[charset] = dec
        return dec

    def _make(self, charset: str) -> TextDecoder:
        if charset in _UTF8:
            return _utf8
        if charset == "latin1":
            return _table_decoder(LATIN1_TABLE)
        codec = _CODECS.get(charset)
        if codec is not None:
            return _codec_decoder(codec)
        if self._single_byte is None:
            raise DecodeError(f"character set {charset!r} has no decoder here (no server to ask for its table)")
        table = self._single_byte(charset)
        if len(table) != 256:
            raise DecodeError(
                f"character set {charset!r} is not one cdcstream can decode (the server's conversion of its 256 "
                f"single bytes gave {len(table)} characters)"
            )
        return _table_decoder(table)

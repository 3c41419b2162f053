/* The compiled fused row renderer: a pgoutput TupleData straight to the JSON text of a record's "data" section.
 *
 * The design, the eligibility rules and the fallback contract are in fused.py (the module that loads this one);
 * the pure-Python decoder + orjson path is the reference, and tests/unit/test_fused.py holds this code to it
 * byte for byte. Anything this code is not sure to render exactly as the reference does (a value outside the
 * grammar PostgreSQL prints, invalid UTF-8, a truncated message, an unusual timestamp) makes render() return
 * None, and the caller decodes the message with the pure path, which renders it or raises the exact error.
 *
 * No Python object is created per value: the row is written into a scratch buffer owned by the plan (the
 * decoder is single-threaded and the GIL is held throughout) and copied once into the returned bytes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

enum {
    K_STRING = 0,       /* the text is the rendering: a JSON string */
    K_INT = 1,          /* int2/int4/int8/oid/xid/cid/xid8: the digits */
    K_BOOL = 2,         /* 't' -> true, 'f' -> false */
    K_FLOAT = 3,        /* float4/float8: a JSON number as orjson writes the double; NaN/Infinity as strings */
    K_TIMESTAMPTZ = 4,  /* '... +00' -> "...T...Z" */
    K_TIMESTAMP = 5,    /* '... ...' -> "...T..." */
    K_BYTEA = 6,        /* '\x0a0b' -> "0x0a0b" */
    K_BYTEA_BARE = 7,   /* '\x0a0b' -> "0a0b" (no_hex_prefix) */
    K_LAST = 7
};

typedef struct {
    PyObject_HEAD
    Py_ssize_t ncols;
    PyObject *kinds;  /* bytes, one kind a column */
    PyObject *keys;   /* bytes, 1 where the column is in the replica identity */
    PyObject *names;  /* tuple of bytes ('"name":', JSON-encoded) or None (the mapping leaves it out) */
    Py_ssize_t names_len;
    int drop_nulls;
    char *scratch;
    size_t cap;
    /* The partition key (primary-key partitioning), or nkey = 0: the prefix, then the key columns' texts in
     * key order joined by '.', each as the reference path's key_text() writes the value (NULL as "null"). */
    Py_ssize_t nkey;
    Py_ssize_t *key_cols;  /* column index of each key part, in key order */
    PyObject *key_prefix;  /* bytes (UTF-8) */
    Py_ssize_t *seg_start; /* per column, where its key text starts in kscratch; -1: "null" */
    Py_ssize_t *seg_len;
    char *key_part; /* per column, 1 where it is a key part */
    char *kscratch;
    size_t kcap;
} RowPlan;

static void RowPlan_dealloc(RowPlan *self) {
    Py_XDECREF(self->kinds);
    Py_XDECREF(self->keys);
    Py_XDECREF(self->names);
    Py_XDECREF(self->key_prefix);
    PyMem_Free(self->scratch);
    PyMem_Free(self->key_cols);
    PyMem_Free(self->seg_start);
    PyMem_Free(self->seg_len);
    PyMem_Free(self->key_part);
    PyMem_Free(self->kscratch);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int RowPlan_init(RowPlan *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"kinds", "keys", "names", "drop_nulls", "key_columns", "key_prefix", NULL};
    PyObject *kinds, *keys, *names, *key_columns = NULL, *key_prefix = NULL;
    int drop_nulls;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "SSO!p|O!S", kwlist, &kinds, &keys, &PyTuple_Type, &names,
                                     &drop_nulls, &PyTuple_Type, &key_columns, &key_prefix))
        return -1;
    if (self->kinds != NULL) {
        PyErr_SetString(PyExc_TypeError, "RowPlan is initialised once");
        return -1;
    }
    Py_ssize_t n = PyBytes_GET_SIZE(kinds);
    if (PyBytes_GET_SIZE(keys) != n || PyTuple_GET_SIZE(names) != n) {
        PyErr_SetString(PyExc_ValueError, "kinds, keys and names must have one item per column");
        return -1;
    }
    Py_ssize_t total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if ((unsigned char)PyBytes_AS_STRING(kinds)[i] > K_LAST) {
            PyErr_SetString(PyExc_ValueError, "unknown column kind");
            return -1;
        }
        PyObject *name = PyTuple_GET_ITEM(names, i);
        if (name == Py_None)
            continue;
        if (!PyBytes_Check(name)) {
            PyErr_SetString(PyExc_TypeError, "names must be bytes or None");
            return -1;
        }
        total += PyBytes_GET_SIZE(name);
    }
    Py_ssize_t nkey = key_columns == NULL ? 0 : PyTuple_GET_SIZE(key_columns);
    if (nkey > 0) {
        self->key_cols = PyMem_New(Py_ssize_t, (size_t)nkey);
        self->seg_start = PyMem_New(Py_ssize_t, (size_t)n + 1);
        self->seg_len = PyMem_New(Py_ssize_t, (size_t)n + 1);
        self->key_part = PyMem_Calloc((size_t)n + 1, 1);
        if (self->key_cols == NULL || self->seg_start == NULL || self->seg_len == NULL || self->key_part == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        for (Py_ssize_t j = 0; j < nkey; j++) {
            Py_ssize_t c = PyLong_AsSsize_t(PyTuple_GET_ITEM(key_columns, j));
            if (c == -1 && PyErr_Occurred())
                return -1;
            if (c < 0 || c >= n) {
                PyErr_SetString(PyExc_ValueError, "key column index out of range");
                return -1;
            }
            self->key_cols[j] = c;
            self->key_part[c] = 1;
        }
        if (key_prefix == NULL)
            key_prefix = PyBytes_FromStringAndSize("", 0);
        else
            Py_INCREF(key_prefix);
        if (key_prefix == NULL)
            return -1;
        self->key_prefix = key_prefix;
    }
    self->nkey = nkey;
    Py_INCREF(kinds);
    Py_INCREF(keys);
    Py_INCREF(names);
    Py_XSETREF(self->kinds, kinds);
    Py_XSETREF(self->keys, keys);
    Py_XSETREF(self->names, names);
    self->ncols = n;
    self->names_len = total;
    self->drop_nulls = drop_nulls;
    return 0;
}

/* JSON string escapes as orjson writes them: the two-character forms for \b \t \n \f \r \" \\, \u00xx for
 * the other control characters, everything else (DEL, non-ASCII) verbatim. 0 = copy. */
static const char ESCAPE[128] = {
    'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'b', 't', 'n', 'u', 'f', 'r', 'u', 'u',
    'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u',
    0,   0,   '"', 0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,
    0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,
    0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,
    0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   '\\', 0,  0,   0,
    0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,
    0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,
};
static const char HEX[] = "0123456789abcdef";

/* Copies s[0:n] JSON-escaped to out (without quotes), checking it is UTF-8 exactly as Python's strict decoder
 * does (no overlong forms, no surrogates, nothing past U+10FFFF); raw: checked but not escaped (key text).
 * Returns the end of the output, or NULL. */
static char *put_escaped(char *out, const unsigned char *s, Py_ssize_t n, int raw) {
    Py_ssize_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        if (c < 0x80) {
            char e = raw ? 0 : ESCAPE[c];
            if (e == 0) {
                *out++ = (char)c;
            } else if (e == 'u') {
                memcpy(out, "\\u00", 4);
                out[4] = HEX[c >> 4];
                out[5] = HEX[c & 15];
                out += 6;
            } else {
                out[0] = '\\';
                out[1] = e;
                out += 2;
            }
            i++;
            continue;
        }
        Py_ssize_t len;
        unsigned char lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) {
            len = 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            if (c == 0xE0)
                lo = 0xA0;
            else if (c == 0xED)
                hi = 0x9F; /* surrogates */
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            if (c == 0xF0)
                lo = 0x90;
            else if (c == 0xF4)
                hi = 0x8F;
        } else {
            return NULL;
        }
        if (i + len > n)
            return NULL;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return NULL;
        for (Py_ssize_t k = 2; k < len; k++)
            if ((s[i + k] & 0xC0) != 0x80)
                return NULL;
        memcpy(out, s + i, (size_t)len);
        out += len;
        i += len;
    }
    return out;
}

static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

/* Integers as PostgreSQL prints them (canonical decimal): the same digits as orjson writes int(text), within
 * what orjson writes (-2**63 .. 2**64-1; wider values are written by the pure path's fallback). */
static char *put_int(char *out, const unsigned char *s, Py_ssize_t n) {
    Py_ssize_t i = (n > 0 && s[0] == '-') ? 1 : 0;
    Py_ssize_t digits = n - i;
    if (digits < 1 || digits > 20 || (digits == 20 && i == 1))
        return NULL;
    /* equal lengths of digits compare as numbers */
    if (digits == 20 && memcmp(s, "18446744073709551615", 20) > 0)
        return NULL;
    if (digits == 19 && i == 1 && memcmp(s + 1, "9223372036854775808", 19) > 0)
        return NULL;
    if (s[i] == '0' && (digits > 1 || i == 1)) /* leading zero, or -0 */
        return NULL;
    for (Py_ssize_t k = i; k < n; k++)
        if (!is_digit(s[k]))
            return NULL;
    memcpy(out, s, (size_t)n);
    return out + n;
}

/* float4/float8: float(text) written as orjson writes a double, i.e. Python's repr (the shortest digits that
 * read back as the same double) except that orjson writes exponent -5 in positional notation (0.00001) and
 * negative exponents without a leading zero (1e-7). fused.py checks this against the installed orjson at
 * import and leaves float columns to the pure path if they differ. */
static char *put_float(char *out, const unsigned char *s, Py_ssize_t n) {
    if ((n == 3 && memcmp(s, "NaN", 3) == 0) || (n == 8 && memcmp(s, "Infinity", 8) == 0) ||
        (n == 9 && memcmp(s, "-Infinity", 9) == 0)) {
        *out++ = '"';
        memcpy(out, s, (size_t)n);
        out += n;
        *out++ = '"';
        return out;
    }
    /* The grammar PostgreSQL prints: -?digits(.digits)?(e[+-]digits)?; float() accepts more (spaces, '_',
     * 'inf'), which the pure path renders. */
    char text[64];
    if (n < 1 || n >= (Py_ssize_t)sizeof(text))
        return NULL;
    Py_ssize_t i = (s[0] == '-') ? 1 : 0, start;
    start = i;
    while (i < n && is_digit(s[i]))
        i++;
    if (i == start)
        return NULL;
    if (i < n && s[i] == '.') {
        start = ++i;
        while (i < n && is_digit(s[i]))
            i++;
        if (i == start)
            return NULL;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            i++;
        start = i;
        while (i < n && is_digit(s[i]))
            i++;
        if (i == start)
            return NULL;
    }
    if (i != n)
        return NULL;
    memcpy(text, s, (size_t)n);
    text[n] = '\0';
    char *end = NULL;
    double d = PyOS_string_to_double(text, &end, NULL);
    if (d == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        return NULL;
    }
    if (end != text + n || !Py_IS_FINITE(d)) /* overflow: the pure path writes what orjson does with inf */
        return NULL;
    char *r = PyOS_double_to_string(d, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (r == NULL) {
        PyErr_Clear();
        return NULL;
    }
    char *e = strchr(r, 'e');
    if (e == NULL) {
        size_t len = strlen(r);
        memcpy(out, r, len);
        out += len;
    } else {
        int exp = atoi(e + 1);
        if (exp == -5) {
            /* d.ddde-05 -> 0.0000dddd */
            const char *m = r;
            if (*m == '-')
                *out++ = *m++;
            memcpy(out, "0.0000", 6);
            out += 6;
            for (; m < e; m++)
                if (*m != '.')
                    *out++ = *m;
        } else {
            size_t len = (size_t)(e - r);
            memcpy(out, r, len);
            out += len;
            out += sprintf(out, exp < 0 ? "e-%d" : "e+%d", exp < 0 ? -exp : exp);
        }
    }
    PyMem_Free(r);
    return out;
}

/* A timestamp's text s[0:n] as a JSON string with its first space replaced by 'T', then `tail` ('Z' or ''),
 * quoted unless raw. */
static char *put_timestamp(char *out, const unsigned char *s, Py_ssize_t n, const char *tail, int raw) {
    const unsigned char *sp = memchr(s, ' ', (size_t)n);
    if (sp == NULL)
        return NULL;
    if (!raw)
        *out++ = '"';
    if ((out = put_escaped(out, s, sp - s, raw)) == NULL)
        return NULL;
    *out++ = 'T';
    if ((out = put_escaped(out, sp + 1, (s + n) - (sp + 1), raw)) == NULL)
        return NULL;
    size_t len = strlen(tail);
    memcpy(out, tail, len);
    out += len;
    if (!raw)
        *out++ = '"';
    return out;
}

/* One value of kind `kind` (text s[0:n]) rendered into out; NULL: not rendered here (the pure path decides).
 * raw: the value's partition-key text instead (key_text() of the reference value: a string unquoted and
 * unescaped; floats, whose key text is Python's str(), are never key columns here). */
static char *put_value(char *out, int kind, const unsigned char *s, Py_ssize_t n, int raw) {
    switch (kind) {
    case K_STRING:
        if (!raw)
            *out++ = '"';
        if ((out = put_escaped(out, s, n, raw)) == NULL)
            return NULL;
        if (!raw)
            *out++ = '"';
        return out;
    case K_INT:
        return put_int(out, s, n);
    case K_BOOL:
        if (n == 1 && s[0] == 't') {
            memcpy(out, "true", 4);
            return out + 4;
        }
        if (n == 1 && s[0] == 'f') {
            memcpy(out, "false", 5);
            return out + 5;
        }
        return NULL;
    case K_FLOAT:
        return raw ? NULL : put_float(out, s, n);
    case K_TIMESTAMPTZ:
        /* UTC as the walsender prints it with TimeZone=UTC; other offsets, infinity and BC: pure path */
        if (n < 4 || memcmp(s + n - 3, "+00", 3) != 0)
            return NULL;
        return put_timestamp(out, s, n - 3, "Z", raw);
    case K_TIMESTAMP:
        if (n < 1 || s[n - 1] == 'y' || (n >= 3 && memcmp(s + n - 3, " BC", 3) == 0))
            return NULL;
        return put_timestamp(out, s, n, "", raw);
    case K_BYTEA:
    case K_BYTEA_BARE:
        if (n < 2 || s[0] != '\\' || s[1] != 'x')
            return NULL;
        if (!raw)
            *out++ = '"';
        if (kind == K_BYTEA) {
            *out++ = '0';
            *out++ = 'x';
        }
        if ((out = put_escaped(out, s + 2, n - 2, raw)) == NULL)
            return NULL;
        if (!raw)
            *out++ = '"';
        return out;
    }
    return NULL;
}

/* The most one value may take in the output: 6 bytes per input byte (\u00xx), plus quotes, a prefix or the
 * float forms (at most 24 characters for any double, plus "0.0000"). */
#define VALUE_SLACK 40

/* The partition key from the key parts rendered into kscratch[0:kout]: prefix + parts joined by '.'. */
static PyObject *assemble_key(RowPlan *self, char *kout) {
    Py_ssize_t used = kout - self->kscratch;
    Py_ssize_t plen = PyBytes_GET_SIZE(self->key_prefix);
    Py_ssize_t total = plen + self->nkey - 1;
    for (Py_ssize_t j = 0; j < self->nkey; j++) {
        Py_ssize_t c = self->key_cols[j];
        total += self->seg_start[c] < 0 ? 4 : self->seg_len[c];
    }
    if ((size_t)(used + total) > self->kcap) {
        char *grown = PyMem_Realloc(self->kscratch, (size_t)(used + total));
        if (grown == NULL)
            return PyErr_NoMemory();
        self->kscratch = grown;
        self->kcap = (size_t)(used + total);
    }
    char *k = self->kscratch + used;
    memcpy(k, PyBytes_AS_STRING(self->key_prefix), (size_t)plen);
    k += plen;
    for (Py_ssize_t j = 0; j < self->nkey; j++) {
        Py_ssize_t c = self->key_cols[j];
        if (j > 0)
            *k++ = '.';
        if (self->seg_start[c] < 0) {
            memcpy(k, "null", 4);
            k += 4;
        } else {
            memcpy(k, self->kscratch + self->seg_start[c], (size_t)self->seg_len[c]);
            k += self->seg_len[c];
        }
    }
    return PyUnicode_DecodeUTF8(self->kscratch + used, total, "strict");
}

static PyObject *RowPlan_render(RowPlan *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "render(buf, pos, key_only)");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    int key_only = PyObject_IsTrue(args[2]);
    PyObject *result = NULL;
    PyObject *unchanged = NULL;
    if ((pos == -1 && PyErr_Occurred()) || key_only < 0)
        goto done;
    const unsigned char *buf = view.buf;
    Py_ssize_t blen = view.len;
    if (pos < 0 || pos + 2 > blen)
        goto fallback;
    Py_ssize_t ncols = (Py_ssize_t)(int16_t)((buf[pos] << 8) | buf[pos + 1]);
    pos += 2;
    if (ncols != self->ncols)
        goto fallback;
    size_t need = 2 + (size_t)self->names_len + (size_t)ncols * (VALUE_SLACK + 2) + 6 * (size_t)(blen - pos);
    if (need > self->cap) {
        char *grown = PyMem_Realloc(self->scratch, need);
        if (grown == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        self->scratch = grown;
        self->cap = need;
    }
    char *kout = NULL;
    if (self->nkey > 0) {
        /* a value's key text takes at most its text + 4 bytes ('f' -> "false") */
        size_t kneed = (size_t)(blen - pos) + 5 * (size_t)ncols;
        if (kneed > self->kcap) {
            char *grown = PyMem_Realloc(self->kscratch, kneed);
            if (grown == NULL) {
                PyErr_NoMemory();
                goto done;
            }
            self->kscratch = grown;
            self->kcap = kneed;
        }
        kout = self->kscratch;
        for (Py_ssize_t i = 0; i < ncols; i++)
            self->seg_start[i] = -1; /* "null" unless the tuple carries the value */
    }
    char *out = self->scratch;
    const char *kinds = PyBytes_AS_STRING(self->kinds);
    const char *keys = PyBytes_AS_STRING(self->keys);
    int first = 1;
    *out++ = '{';
    for (Py_ssize_t i = 0; i < ncols; i++) {
        if (pos >= blen)
            goto fallback;
        unsigned char tag = buf[pos++];
        PyObject *name = PyTuple_GET_ITEM(self->names, i);
        int emit = name != Py_None && (!key_only || keys[i]);
        if (tag == 't') {
            if (pos + 4 > blen)
                goto fallback;
            int32_t n = (int32_t)(((uint32_t)buf[pos] << 24) | ((uint32_t)buf[pos + 1] << 16) |
                                  ((uint32_t)buf[pos + 2] << 8) | (uint32_t)buf[pos + 3]);
            pos += 4;
            if (n < 0 || n > blen - pos)
                goto fallback;
            char *mark = out;
            if (emit) {
                if (!first)
                    *out++ = ',';
                memcpy(out, PyBytes_AS_STRING(name), (size_t)PyBytes_GET_SIZE(name));
                out += PyBytes_GET_SIZE(name);
            }
            /* A column the record leaves out is still checked: the pure path decodes every value and would
             * raise for a malformed one. */
            char *end = put_value(out, kinds[i], buf + pos, n, 0);
            if (end == NULL)
                goto fallback;
            /* In a 'K' tuple the reference row keeps only the replica identity: another key part is "null". */
            if (kout != NULL && self->key_part[i] && (!key_only || keys[i])) {
                char *kend = put_value(kout, kinds[i], buf + pos, n, 1);
                if (kend == NULL)
                    goto fallback;
                self->seg_start[i] = kout - self->kscratch;
                self->seg_len[i] = kend - kout;
                kout = kend;
            }
            if (emit) {
                out = end;
                first = 0;
            } else {
                out = mark;
            }
            pos += n;
        } else if (tag == 'n') {
            if (emit && !self->drop_nulls) {
                if (!first)
                    *out++ = ',';
                memcpy(out, PyBytes_AS_STRING(name), (size_t)PyBytes_GET_SIZE(name));
                out += PyBytes_GET_SIZE(name);
                memcpy(out, "null", 4);
                out += 4;
                first = 0;
            }
        } else if (tag == 'u') {
            /* unchanged TOAST: not in the row, its column listed (by index) for the metadata; a key part the
             * server did not send is left to the reference path (rare: a TOASTed key) */
            if (kout != NULL && self->key_part[i])
                goto fallback;
            if (unchanged == NULL && (unchanged = PyList_New(0)) == NULL)
                goto done;
            PyObject *index = PyLong_FromSsize_t(i);
            if (index == NULL || PyList_Append(unchanged, index) < 0) {
                Py_XDECREF(index);
                goto done;
            }
            Py_DECREF(index);
        } else {
            goto fallback;
        }
    }
    *out++ = '}';
    {
        PyObject *data = PyBytes_FromStringAndSize(self->scratch, out - self->scratch);
        if (data == NULL)
            goto done;
        PyObject *idx = unchanged == NULL ? PyTuple_New(0) : PyList_AsTuple(unchanged);
        if (idx == NULL) {
            Py_DECREF(data);
            goto done;
        }
        PyObject *key = kout == NULL ? Py_NewRef(Py_None) : assemble_key(self, kout);
        if (key == NULL) {
            Py_DECREF(data);
            Py_DECREF(idx);
            goto done;
        }
        result = Py_BuildValue("(NnNN)", data, pos, idx, key);
    }
    goto done;
fallback:
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(unchanged);
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef RowPlan_methods[] = {
    {"render", (PyCFunction)(void (*)(void))RowPlan_render, METH_FASTCALL,
     "render(buf, pos, key_only) -> (data JSON bytes, end offset, unchanged column indexes, partition key or "
     "None) or None"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject RowPlanType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "cdcstream.sources.postgres._fused.RowPlan",
    .tp_basicsize = sizeof(RowPlan),
    .tp_dealloc = (destructor)RowPlan_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One relation's compiled row renderer: column kinds, key flags and JSON-encoded output names.",
    .tp_methods = RowPlan_methods,
    .tp_init = (initproc)RowPlan_init,
    .tp_new = PyType_GenericNew,
};

/* ---- PutRecords request bodies (sinks/putrecords.py: build_body is the reference) ----------------------------
 *
 * put_records_body(head, records, keys, counts): head + the entries joined by ',' + "]}", each entry
 * {"Data":"<base64 of record.data>","PartitionKey":<key as orjson writes a str>}, or record.entry as is when a
 * mapping worker built it for the same key. keys[i] owns the next counts[i] records (sinks/batching.py's Batch).
 * One pass over the batch into one bytes object: no per-record Python object, no join of hundreds of parts. */

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Standard base64 with '=' padding and no newline, as binascii.b2a_base64(data, newline=False) writes it. */
static char *put_base64(char *out, const unsigned char *s, Py_ssize_t n) {
    Py_ssize_t i = 0;
    for (; i + 3 <= n; i += 3) {
        unsigned v = ((unsigned)s[i] << 16) | ((unsigned)s[i + 1] << 8) | s[i + 2];
        out[0] = B64[v >> 18];
        out[1] = B64[(v >> 12) & 63];
        out[2] = B64[(v >> 6) & 63];
        out[3] = B64[v & 63];
        out += 4;
    }
    if (n - i == 1) {
        unsigned v = (unsigned)s[i] << 16;
        out[0] = B64[v >> 18];
        out[1] = B64[(v >> 12) & 63];
        out[2] = '=';
        out[3] = '=';
        out += 4;
    } else if (n - i == 2) {
        unsigned v = ((unsigned)s[i] << 16) | ((unsigned)s[i + 1] << 8);
        out[0] = B64[v >> 18];
        out[1] = B64[(v >> 12) & 63];
        out[2] = B64[(v >> 6) & 63];
        out[3] = '=';
        out += 4;
    }
    return out;
}

#define ENTRY_HEAD "{\"Data\":\""
#define ENTRY_MID "\",\"PartitionKey\":\""

static PyObject *put_records_body(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 4 || !PyBytes_Check(args[0]) || !PyList_Check(args[1]) || !PyList_Check(args[2]) ||
        !PyList_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "put_records_body(head: bytes, records: list, keys: list, counts: list)");
        return NULL;
    }
    PyObject *head = args[0], *records = args[1], *keys = args[2], *counts = args[3];
    Py_ssize_t nkeys = PyList_GET_SIZE(keys), nrec = PyList_GET_SIZE(records);
    if (PyList_GET_SIZE(counts) != nkeys) {
        PyErr_SetString(PyExc_ValueError, "keys and counts differ in length");
        return NULL;
    }
    static PyObject *s_data = NULL, *s_entry = NULL, *s_key = NULL;
    if (s_data == NULL && ((s_data = PyUnicode_InternFromString("data")) == NULL ||
                           (s_entry = PyUnicode_InternFromString("entry")) == NULL ||
                           (s_key = PyUnicode_InternFromString("partition_key")) == NULL))
        return NULL;
    PyObject *result = NULL;
    /* Each record's bytes to write, borrowed from the record (its data or entry), and whether it is an entry. */
    PyObject **parts = PyMem_Malloc(sizeof(PyObject *) * (size_t)(nrec ? nrec : 1));
    char *is_entry = PyMem_Malloc((size_t)(nrec ? nrec : 1));
    Py_ssize_t nparts = 0;
    if (parts == NULL || is_entry == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    /* Pass 1: the parts, and an upper bound of the body's size (a key's escaped text is at most 6 bytes per
     * UTF-8 byte). */
    Py_ssize_t total = PyBytes_GET_SIZE(head) + 2;
    Py_ssize_t r = 0;
    for (Py_ssize_t k = 0; k < nkeys; k++) {
        PyObject *key = PyList_GET_ITEM(keys, k);
        Py_ssize_t n = PyLong_AsSsize_t(PyList_GET_ITEM(counts, k));
        if (n == -1 && PyErr_Occurred())
            goto done;
        Py_ssize_t klen;
        if (!PyUnicode_Check(key) || PyUnicode_AsUTF8AndSize(key, &klen) == NULL) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "partition keys must be str");
            goto done;
        }
        if (n < 0 || r + n > nrec) {
            PyErr_SetString(PyExc_ValueError, "counts do not add up to the records");
            goto done;
        }
        for (Py_ssize_t i = 0; i < n; i++, r++) {
            PyObject *rec = PyList_GET_ITEM(records, r);
            PyObject *entry = PyObject_GetAttr(rec, s_entry);
            if (entry == NULL)
                goto done;
            if (entry != Py_None) {
                PyObject *own = PyObject_GetAttr(rec, s_key);
                int same = own == NULL ? -1 : PyUnicode_Check(own) ? PyUnicode_Compare(own, key) == 0 : 0;
                Py_XDECREF(own);
                if (same < 0 || PyErr_Occurred()) {
                    Py_DECREF(entry);
                    goto done;
                }
                if (same && PyBytes_Check(entry)) {
                    Py_DECREF(entry); /* the record keeps it alive while the body is built */
                    parts[nparts] = entry;
                    is_entry[nparts++] = 1;
                    total += PyBytes_GET_SIZE(entry) + 1;
                    continue;
                }
            }
            Py_DECREF(entry);
            PyObject *data = PyObject_GetAttr(rec, s_data);
            if (data == NULL)
                goto done;
            Py_DECREF(data); /* as above: borrowed from the record */
            if (!PyBytes_Check(data)) {
                PyErr_SetString(PyExc_TypeError, "record data must be bytes");
                goto done;
            }
            parts[nparts] = data;
            is_entry[nparts++] = 0;
            total += (PyBytes_GET_SIZE(data) + 2) / 3 * 4 + (Py_ssize_t)sizeof(ENTRY_HEAD ENTRY_MID) + 6 * klen + 3;
        }
    }
    if (r != nrec) {
        PyErr_SetString(PyExc_ValueError, "counts do not add up to the records");
        goto done;
    }
    /* Pass 2: write. */
    result = PyBytes_FromStringAndSize(NULL, total);
    if (result == NULL)
        goto done;
    char *out = PyBytes_AS_STRING(result);
    memcpy(out, PyBytes_AS_STRING(head), (size_t)PyBytes_GET_SIZE(head));
    out += PyBytes_GET_SIZE(head);
    Py_ssize_t p = 0;
    for (Py_ssize_t k = 0; k < nkeys; k++) {
        Py_ssize_t n = PyLong_AsSsize_t(PyList_GET_ITEM(counts, k));
        Py_ssize_t klen;
        const char *kutf8 = PyUnicode_AsUTF8AndSize(PyList_GET_ITEM(keys, k), &klen);
        for (Py_ssize_t i = 0; i < n; i++, p++) {
            if (p > 0)
                *out++ = ',';
            PyObject *part = parts[p];
            if (is_entry[p]) {
                memcpy(out, PyBytes_AS_STRING(part), (size_t)PyBytes_GET_SIZE(part));
                out += PyBytes_GET_SIZE(part);
                continue;
            }
            memcpy(out, ENTRY_HEAD, sizeof(ENTRY_HEAD) - 1);
            out = put_base64(out + sizeof(ENTRY_HEAD) - 1, (const unsigned char *)PyBytes_AS_STRING(part),
                             PyBytes_GET_SIZE(part));
            memcpy(out, ENTRY_MID, sizeof(ENTRY_MID) - 1);
            out = put_escaped(out + sizeof(ENTRY_MID) - 1, (const unsigned char *)kutf8, klen, 0);
            if (out == NULL) { /* not reachable: Python's UTF-8 of a str is valid */
                Py_CLEAR(result);
                PyErr_SetString(PyExc_ValueError, "invalid UTF-8 in a partition key");
                goto done;
            }
            out[0] = '"';
            out[1] = '}';
            out += 2;
        }
    }
    out[0] = ']';
    out[1] = '}';
    out += 2;
    _PyBytes_Resize(&result, out - PyBytes_AS_STRING(result));
done:
    PyMem_Free(parts);
    PyMem_Free(is_entry);
    return result;
}

static PyMethodDef fused_functions[] = {
    {"put_records_body", (PyCFunction)(void (*)(void))put_records_body, METH_FASTCALL,
     "put_records_body(head, records, keys, counts) -> the PutRecords request body (sinks/putrecords.py)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef fused_module = {
    PyModuleDef_HEAD_INIT, "_fused", "Compiled fused pgoutput row renderer (see fused.py).", -1, fused_functions,
};

PyMODINIT_FUNC PyInit__fused(void) {
    if (PyType_Ready(&RowPlanType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&fused_module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "RowPlan", (PyObject *)&RowPlanType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

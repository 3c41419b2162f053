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
#include <structmember.h>

#include "../../_fused_json.h"

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

/* float4/float8: float(text) written as orjson writes a double (put_double_repr). fused.py checks this against
 * the installed orjson at import and leaves float columns to the pure path if they differ. */
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
    return put_double_repr(out, d);
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

/* One TupleData at buf[pos] rendered into self->scratch (the data section: self->scratch[0:*len]) and, with a
 * partition key, its parts into self->kscratch (*kout_p: their end). Unchanged TOAST columns are appended to
 * *unchanged (a list made on first need) when unchanged is not NULL, else they make the row go to the reference
 * path. Returns 1 (rendered; *end_p: the offset after the tuple), 0 (the reference path decides) or -1 (a
 * Python error). */
static int render_core(RowPlan *self, const unsigned char *buf, Py_ssize_t blen, Py_ssize_t pos, int key_only,
                       Py_ssize_t *end_p, Py_ssize_t *len_p, char **kout_p, PyObject **unchanged) {
    if (pos < 0 || pos + 2 > blen)
        return 0;
    Py_ssize_t ncols = (Py_ssize_t)(int16_t)((buf[pos] << 8) | buf[pos + 1]);
    pos += 2;
    if (ncols != self->ncols)
        return 0;
    size_t need = 2 + (size_t)self->names_len + (size_t)ncols * (VALUE_SLACK + 2) + 6 * (size_t)(blen - pos);
    if (need > self->cap) {
        char *grown = PyMem_Realloc(self->scratch, need);
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
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
                return -1;
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
            return 0;
        unsigned char tag = buf[pos++];
        PyObject *name = PyTuple_GET_ITEM(self->names, i);
        int emit = name != Py_None && (!key_only || keys[i]);
        if (tag == 't') {
            if (pos + 4 > blen)
                return 0;
            int32_t n = (int32_t)(((uint32_t)buf[pos] << 24) | ((uint32_t)buf[pos + 1] << 16) |
                                  ((uint32_t)buf[pos + 2] << 8) | (uint32_t)buf[pos + 3]);
            pos += 4;
            if (n < 0 || n > blen - pos)
                return 0;
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
                return 0;
            /* In a 'K' tuple the reference row keeps only the replica identity: another key part is "null". */
            if (kout != NULL && self->key_part[i] && (!key_only || keys[i])) {
                char *kend = put_value(kout, kinds[i], buf + pos, n, 1);
                if (kend == NULL)
                    return 0;
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
                return 0;
            if (unchanged == NULL)
                return 0;
            if (*unchanged == NULL && (*unchanged = PyList_New(0)) == NULL)
                return -1;
            PyObject *index = PyLong_FromSsize_t(i);
            if (index == NULL || PyList_Append(*unchanged, index) < 0) {
                Py_XDECREF(index);
                return -1;
            }
            Py_DECREF(index);
        } else {
            return 0;
        }
    }
    *out++ = '}';
    *end_p = pos;
    *len_p = out - self->scratch;
    *kout_p = kout;
    return 1;
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
    Py_ssize_t end, len;
    char *kout;
    int got = render_core(self, view.buf, view.len, pos, key_only, &end, &len, &kout, &unchanged);
    if (got < 0)
        goto done;
    if (got == 0) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    PyObject *data = PyBytes_FromStringAndSize(self->scratch, len);
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
    result = Py_BuildValue("(NnNN)", data, end, idx, key);
done:
    Py_XDECREF(unchanged);
    PyBuffer_Release(&view);
    return result;
}

/* ---- CDC: a run of row messages in one call ---------------------------------------------------------------
 *
 * render_run() renders consecutive XLogData frames, from frames[start], that are INSERT, UPDATE or DELETE messages
 * of one relation (relid, whose RowPlan this is) exactly as the decoder's fused path would one at a time
 * (Decoder._insert, _fused_update, _delete), and stops before the first frame it is not sure of: another message
 * or relation, a frame that is not bytes, anything render() would refuse, an unchanged TOAST value (the reference
 * path lists it), bytes left over at the end of a message. The decoder handles that frame as before (renders it,
 * or raises its exact error), so a run changes how many Python objects a row costs, never what it becomes. */

static uint64_t be64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

/* One row message (frame b[0:n]) into self->scratch; 1, 0 (not here) or -1 (a Python error); *op: 0 I, 1 U, 2 D. */
static int run_row(RowPlan *self, const unsigned char *b, Py_ssize_t n, uint32_t relid, int *op, Py_ssize_t *len,
                   char **kout) {
    if (n < 31 || b[0] != 'w')
        return 0;
    if ((((uint32_t)b[26] << 24) | ((uint32_t)b[27] << 16) | ((uint32_t)b[28] << 8) | (uint32_t)b[29]) != relid)
        return 0;
    Py_ssize_t end = 0;
    int got;
    unsigned char kind = b[30];
    switch (b[25]) {
    case 'I':
        if (kind != 'N')
            return 0;
        *op = 0;
        got = render_core(self, b, n, 31, 0, &end, len, kout, NULL);
        break;
    case 'U': {
        Py_ssize_t pos = 30;
        if (kind == 'K' || kind == 'O') {
            got = render_core(self, b, n, 31, kind == 'K', &pos, len, kout, NULL);
            if (got <= 0)
                return got;
        }
        if (pos >= n || b[pos] != 'N')
            return 0;
        *op = 1;
        got = render_core(self, b, n, pos + 1, 0, &end, len, kout, NULL);
        break;
    }
    case 'D':
        if (kind != 'K' && kind != 'O')
            return 0;
        *op = 2;
        got = render_core(self, b, n, 31, kind == 'K', &end, len, kout, NULL);
        break;
    default:
        return 0;
    }
    if (got <= 0)
        return got;
    return end == n ? 1 : 0;
}

static PyObject *RowPlan_render_run(RowPlan *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyList_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "render_run(frames: list, start, relid)");
        return NULL;
    }
    PyObject *frames = args[0];
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    if (start == -1 && PyErr_Occurred())
        return NULL;
    unsigned long relid = PyLong_AsUnsignedLong(args[2]);
    if (relid == (unsigned long)-1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t total = PyList_GET_SIZE(frames);
    if (start < 0 || start > total) {
        PyErr_SetString(PyExc_ValueError, "render_run: start out of range");
        return NULL;
    }
    PyObject *datas = PyList_New(0), *keys = self->nkey > 0 ? PyList_New(0) : Py_NewRef(Py_None);
    PyObject *result = NULL;
    char *ops = NULL;
    if (datas == NULL || keys == NULL)
        goto done;
    if ((ops = PyMem_Malloc((size_t)(total - start) + 1)) == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    uint64_t wal_end = 0;
    Py_ssize_t i = start;
    for (; i < total; i++) {
        PyObject *frame = PyList_GET_ITEM(frames, i);
        if (!PyBytes_CheckExact(frame))
            break;
        const unsigned char *b = (const unsigned char *)PyBytes_AS_STRING(frame);
        int op;
        Py_ssize_t len;
        char *kout;
        int got = run_row(self, b, PyBytes_GET_SIZE(frame), (uint32_t)relid, &op, &len, &kout);
        if (got < 0)
            goto done;
        if (got == 0)
            break;
        PyObject *data = PyBytes_FromStringAndSize(self->scratch, len);
        if (data == NULL)
            goto done;
        int bad = PyList_Append(datas, data) < 0;
        Py_DECREF(data);
        if (bad)
            goto done;
        if (kout != NULL) {
            PyObject *key = assemble_key(self, kout);
            if (key == NULL)
                goto done;
            bad = PyList_Append(keys, key) < 0;
            Py_DECREF(key);
            if (bad)
                goto done;
        }
        ops[i - start] = (char)op;
        uint64_t end = be64(b + 9);
        if (end > wal_end)
            wal_end = end;
    }
    {
        PyObject *opsb = PyBytes_FromStringAndSize(ops, i - start);
        if (opsb == NULL)
            goto done;
        result = Py_BuildValue("(nNOOK)", i, opsb, datas, keys, (unsigned long long)wal_end);
    }
done:
    PyMem_Free(ops);
    Py_XDECREF(datas);
    Py_XDECREF(keys);
    return result;
}

/* ---- Full load: COPY text rows straight to load records and their PutRecords entries -------------------------
 *
 * render_copy() takes a block of COPY ... TO STDOUT text-format lines (sources/postgres/snapshot.py) and writes,
 * per row, what the reference path (split_copy_text + render_lines + Mapper.map + put_records_entry) writes:
 * the partition key, the record ('{"data":' + the data section + the metadata tail the caller serialised once
 * for the chunk) and its PutRecords entry ('{"Data":"' + base64 + '","PartitionKey":' + the key as JSON + '}').
 * Values go through put_value() exactly as pgoutput's do; only the framing differs: fields split by tabs, "\N"
 * for NULL, and backslash escapes, of which COPY TO writes \b \f \n \r \t \v and \\ only. Anything else (another
 * escape, a field count that does not match, a row that does not end in a newline, any value put_value refuses)
 * makes the whole block go to the reference path (None), which renders it or raises its exact error. */

/* One COPY text field s[0:n] without its escapes into out (room for n bytes); the end, or NULL for an escape
 * COPY TO does not write (the reference path's _unescape decides those). */
static char *copy_unescape(char *out, const unsigned char *s, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) {
        if (s[i] != '\\') {
            *out++ = (char)s[i];
            continue;
        }
        if (++i >= n)
            return NULL;
        switch (s[i]) {
        case 'b': *out++ = '\b'; break;
        case 'f': *out++ = '\f'; break;
        case 'n': *out++ = '\n'; break;
        case 'r': *out++ = '\r'; break;
        case 't': *out++ = '\t'; break;
        case 'v': *out++ = '\v'; break;
        case '\\': *out++ = '\\'; break;
        default: return NULL;
        }
    }
    return out;
}

/* A key's length in characters (the sink sends keys over 256 characters as their digest), from valid UTF-8. */
static Py_ssize_t utf8_chars(const char *s, Py_ssize_t n) {
    Py_ssize_t chars = 0;
    for (Py_ssize_t i = 0; i < n; i++)
        chars += ((unsigned char)s[i] & 0xC0) != 0x80;
    return chars;
}

#define MAX_PARTITION_KEY_CHARS 256

/* Grows *buf to hold need bytes. */
static int reserve(char **buf, size_t *cap, size_t need) {
    if (need <= *cap)
        return 0;
    char *grown = PyMem_Realloc(*buf, need);
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    *buf = grown;
    *cap = need;
    return 0;
}

/* Scratch space of one render_copy() call. */
typedef struct {
    char *field; /* an unescaped field */
    size_t field_cap;
    char *keyjson; /* the partition key as a JSON string */
    size_t keyjson_cap;
} CopyScratch;

/* One row's data section from its line s[0:n] into self->scratch (after the 8 bytes of '{"data":', with room
 * for tail_len more bytes), its key parts into self->kscratch; returns the end of the data section, or NULL (not rendered here: *failed = 0, or
 * a Python error: *failed = 1). */
static char *copy_row(RowPlan *self, CopyScratch *cs, const unsigned char *s, Py_ssize_t n, Py_ssize_t tail_len,
                      char **kout_p, int *failed) {
    *failed = 0;
    Py_ssize_t ncols = self->ncols;
    size_t need = 8 + 2 + (size_t)self->names_len + (size_t)ncols * (VALUE_SLACK + 2) + 6 * (size_t)n + (size_t)tail_len;
    if (reserve(&self->scratch, &self->cap, need) < 0 || reserve(&cs->field, &cs->field_cap, (size_t)n + 1) < 0) {
        *failed = 1;
        return NULL;
    }
    char *kout = NULL;
    if (self->nkey > 0) {
        if (reserve(&self->kscratch, &self->kcap, (size_t)n + 5 * (size_t)ncols) < 0) {
            *failed = 1;
            return NULL;
        }
        kout = self->kscratch;
        for (Py_ssize_t i = 0; i < ncols; i++)
            self->seg_start[i] = -1;
    }
    const char *kinds = PyBytes_AS_STRING(self->kinds);
    char *out = self->scratch + 8;
    int first = 1;
    Py_ssize_t pos = 0;
    *out++ = '{';
    for (Py_ssize_t i = 0; i < ncols; i++) {
        if (pos > n)
            return NULL; /* fewer fields than columns */
        const unsigned char *f = s + pos;
        const unsigned char *tab = memchr(f, '\t', (size_t)(n - pos));
        Py_ssize_t flen = tab == NULL ? n - pos : tab - f;
        if ((tab == NULL) != (i == ncols - 1))
            return NULL; /* more or fewer fields than columns */
        pos += flen + 1;
        PyObject *name = PyTuple_GET_ITEM(self->names, i);
        int emit = name != Py_None;
        if (flen == 2 && f[0] == '\\' && f[1] == 'N') {
            if (emit && !self->drop_nulls) {
                if (!first)
                    *out++ = ',';
                memcpy(out, PyBytes_AS_STRING(name), (size_t)PyBytes_GET_SIZE(name));
                out += PyBytes_GET_SIZE(name);
                memcpy(out, "null", 4);
                out += 4;
                first = 0;
            }
            continue; /* a NULL key part stays "null" (seg_start -1) */
        }
        if (memchr(f, '\\', (size_t)flen) != NULL) {
            char *end = copy_unescape(cs->field, f, flen);
            if (end == NULL)
                return NULL;
            flen = end - cs->field;
            f = (const unsigned char *)cs->field;
        }
        char *mark = out;
        if (emit) {
            if (!first)
                *out++ = ',';
            memcpy(out, PyBytes_AS_STRING(name), (size_t)PyBytes_GET_SIZE(name));
            out += PyBytes_GET_SIZE(name);
        }
        /* A column the record leaves out is still checked: the reference path converts every value. */
        char *end = put_value(out, kinds[i], f, flen, 0);
        if (end == NULL)
            return NULL;
        if (kout != NULL && self->key_part[i]) {
            char *kend = put_value(kout, kinds[i], f, flen, 1);
            if (kend == NULL)
                return NULL;
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
    }
    *out++ = '}';
    *kout_p = kout;
    return out;
}

/* The PutRecords entry of one record: '{"Data":"' + base64(data) + '","PartitionKey":' + keyjson + '}'. */
static PyObject *copy_entry(const char *data, Py_ssize_t dlen, const char *keyjson, Py_ssize_t klen) {
    Py_ssize_t b64 = 4 * ((dlen + 2) / 3);
    PyObject *entry = PyBytes_FromStringAndSize(NULL, 9 + b64 + 17 + klen + 1);
    if (entry == NULL)
        return NULL;
    char *e = PyBytes_AS_STRING(entry);
    memcpy(e, "{\"Data\":\"", 9);
    e = put_base64(e + 9, (const unsigned char *)data, dlen);
    memcpy(e, "\",\"PartitionKey\":", 17);
    memcpy(e + 17, keyjson, (size_t)klen);
    e[17 + klen] = '}';
    return entry;
}

/* key (UTF-8 k[0:kn]) as a JSON string into cs->keyjson; its length, or -1 (an error set, or *bad: not UTF-8). */
static Py_ssize_t copy_keyjson(CopyScratch *cs, const char *k, Py_ssize_t kn) {
    if (reserve(&cs->keyjson, &cs->keyjson_cap, 6 * (size_t)kn + 2) < 0)
        return -1;
    char *j = cs->keyjson;
    *j++ = '"';
    j = put_escaped(j, (const unsigned char *)k, kn, 0);
    if (j == NULL)
        return -2;
    *j++ = '"';
    return j - cs->keyjson;
}

static PyObject *RowPlan_render_copy(RowPlan *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4 || !PyBytes_Check(args[0]) || !PyBytes_Check(args[1]) ||
        (args[2] != Py_None && !PyUnicode_Check(args[2])) || !PyUnicode_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "render_copy(text: bytes, tail: bytes, static_key: str | None, empty_key: str)");
        return NULL;
    }
    if ((self->nkey > 0) == (args[2] != Py_None)) {
        PyErr_SetString(PyExc_ValueError, "render_copy: a static key exactly when the plan has no key columns");
        return NULL;
    }
    if (self->ncols == 0)
        return Py_NewRef(Py_None); /* a table without columns: its empty lines are the reference path's to judge */
    const unsigned char *text = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    Py_ssize_t tlen = PyBytes_GET_SIZE(args[0]);
    const char *tail = PyBytes_AS_STRING(args[1]);
    Py_ssize_t tail_len = PyBytes_GET_SIZE(args[1]);
    PyObject *static_key = args[2], *empty_key = args[3];
    CopyScratch cs = {NULL, 0, NULL, 0};
    PyObject *keys = PyList_New(0), *datas = PyList_New(0), *entries = PyList_New(0);
    PyObject *result = NULL;
    if (keys == NULL || datas == NULL || entries == NULL)
        goto done;
    /* The JSON of a key that is the same for every row (a static key, the empty key's substitute). */
    Py_ssize_t fixed_len = 0, fixed_chars = 0;
    char *fixed = NULL;
    PyObject *fixed_key = static_key != Py_None ? static_key : empty_key;
    {
        Py_ssize_t n;
        const char *u = PyUnicode_AsUTF8AndSize(fixed_key, &n);
        if (u == NULL)
            goto done;
        Py_ssize_t got = copy_keyjson(&cs, u, n);
        if (got == -1)
            goto done;
        if (got == -2)
            goto fallback;
        if ((fixed = PyMem_Malloc((size_t)got)) == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        memcpy(fixed, cs.keyjson, (size_t)got);
        fixed_len = got;
        fixed_chars = PyUnicode_GET_LENGTH(fixed_key);
    }
    Py_ssize_t pos = 0;
    while (pos < tlen) {
        const unsigned char *nl = memchr(text + pos, '\n', (size_t)(tlen - pos));
        if (nl == NULL)
            goto fallback; /* a row without its newline */
        Py_ssize_t llen = nl - (text + pos);
        char *kout = NULL;
        int failed;
        char *end = copy_row(self, &cs, text + pos, llen, tail_len, &kout, &failed);
        if (end == NULL) {
            if (failed)
                goto done;
            goto fallback;
        }
        pos += llen + 1;
        memcpy(self->scratch, "{\"data\":", 8);
        memcpy(end, tail, (size_t)tail_len);
        Py_ssize_t dlen = (end - self->scratch) + tail_len;
        PyObject *key;
        const char *kj = fixed;
        Py_ssize_t kjlen = fixed_len, kchars = fixed_chars;
        if (kout != NULL) {
            key = assemble_key(self, kout);
            if (key == NULL)
                goto done;
            if (PyUnicode_GET_LENGTH(key) == 0) {
                Py_SETREF(key, Py_NewRef(empty_key)); /* as the mapper does: Kinesis refuses an empty key */
            } else {
                Py_ssize_t klen;
                const char *k = PyUnicode_AsUTF8AndSize(key, &klen); /* an ASCII key's own bytes, no copy */
                kjlen = k == NULL ? -1 : copy_keyjson(&cs, k, klen);
                if (kjlen < 0) {
                    Py_DECREF(key);
                    if (kjlen == -1)
                        goto done;
                    goto fallback;
                }
                kj = cs.keyjson;
                kchars = PyUnicode_GET_LENGTH(key);
            }
        } else {
            key = Py_NewRef(static_key);
        }
        PyObject *data = PyBytes_FromStringAndSize(self->scratch, dlen);
        /* A key the sink sends as its digest: the caller builds that entry (None here). */
        PyObject *entry = kchars > MAX_PARTITION_KEY_CHARS ? Py_NewRef(Py_None)
                          : data == NULL                   ? NULL
                                                           : copy_entry(self->scratch, dlen, kj, kjlen);
        int bad = data == NULL || entry == NULL || PyList_Append(keys, key) < 0 || PyList_Append(datas, data) < 0 ||
                  PyList_Append(entries, entry) < 0;
        Py_DECREF(key);
        Py_XDECREF(data);
        Py_XDECREF(entry);
        if (bad)
            goto done;
    }
    result = PyTuple_Pack(3, keys, datas, entries);
    goto done;
fallback:
    result = Py_NewRef(Py_None);
done:
    PyMem_Free(fixed);
    PyMem_Free(cs.field);
    PyMem_Free(cs.keyjson);
    Py_XDECREF(keys);
    Py_XDECREF(datas);
    Py_XDECREF(entries);
    return result;
}

static PyMethodDef RowPlan_methods[] = {
    {"render", (PyCFunction)(void (*)(void))RowPlan_render, METH_FASTCALL,
     "render(buf, pos, key_only) -> (data JSON bytes, end offset, unchanged column indexes, partition key or "
     "None) or None"},
    {"render_run", (PyCFunction)(void (*)(void))RowPlan_render_run, METH_FASTCALL,
     "render_run(frames, start, relid) -> (index after the run, ops (0 insert, 1 update, 2 delete), data sections, "
     "partition keys or None, highest walEnd of the run)"},
    {"render_copy", (PyCFunction)(void (*)(void))RowPlan_render_copy, METH_FASTCALL,
     "render_copy(text, tail, static_key, empty_key) -> (partition keys, records, PutRecords entries or None where "
     "the key is over 256 characters) of a COPY text block, or None"},
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

static struct PyModuleDef fused_module = {
    PyModuleDef_HEAD_INIT, "_fused", "Compiled fused pgoutput row renderer (see fused.py).", -1, NULL,
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

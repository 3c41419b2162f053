/* The compiled fused row renderer for MySQL/MariaDB: binlog row images straight to the JSON text of records'
 * "data" sections.
 *
 * The design, the eligibility rules and the fallback contract are in fused.py (the module that loads this one);
 * the pure-Python path (binlog/values.py decoders + the mapper + orjson) is the reference, and
 * tests/unit/test_mysql_fused.py holds this code to it byte for byte. Anything this code is not sure to render
 * exactly as the reference does (invalid UTF-8, a value running past the event, an invalid or zero date, a
 * DECIMAL digit group out of range, a non-finite double) stops the batch at that row, and the caller decodes the
 * row with the pure path, which renders it or raises its exact error.
 *
 * No Python object is created per value: a row is written into a scratch buffer owned by the plan (the reader
 * thread is the only user and the GIL is held throughout) and copied once into the returned bytes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "../../_fused_json.h"

enum {
    K_I8 = 0, K_U8, K_I16, K_U16, K_I24, K_U24, K_I32, K_U32, K_I64, K_U64, /* little-endian integers */
    K_TEXT = 10,       /* a: length bytes (1-4); UTF-8 text (utf8mb4/utf8mb3) as a JSON string */
    K_HEX = 11,        /* a: length bytes, b: pad to b bytes (BINARY(n)); "0x" + lowercase hex */
    K_HEX_BARE = 12,   /* the same without "0x" (no_hex_prefix) */
    K_DECIMAL = 13,    /* a: precision, b: scale; MySQL's binary DECIMAL as a string of its exact digits */
    K_DATE = 14,       /* b: 1 when invalid dates render as null (those rows go to the pure path) */
    K_DATETIME2 = 15,  /* a: fsp */
    K_TIMESTAMP2 = 16, /* a: fsp */
    K_DOUBLE = 17,     /* as orjson writes the double */
    K_YEAR = 18,       /* 0 or 1901..2155 */
    K_FLOAT = 19,      /* types.float32: the shortest decimal that is the same 4-byte float, written as a double */
    K_LAST = 19
};

typedef struct {
    PyObject_HEAD
    Py_ssize_t ncols;
    unsigned char *kinds;
    int *pa;
    int *pb;
    PyObject *names; /* tuple of bytes ('"name":', JSON-encoded) or None (the mapping leaves the column out) */
    Py_ssize_t names_len;
    Py_ssize_t pad_len; /* the most BINARY(n) padding one row may add (hex digits) */
    int drop_nulls;
    char *scratch;
    size_t cap;
    /* The partition key (primary-key partitioning), or nkey = 0: the prefix, then the key columns' texts in key
     * order joined by '.', each as the reference path's key_text() writes the value (NULL as "null"). */
    Py_ssize_t nkey;
    Py_ssize_t *key_cols;
    PyObject *key_prefix;  /* bytes (UTF-8) */
    Py_ssize_t *seg_start; /* per column, where its key text starts in kscratch; -1: "null" */
    Py_ssize_t *seg_len;
    char *key_part; /* per column, 1 where it is a key part */
    char *kscratch;
    size_t kcap;
    Py_ssize_t kused; /* the end of the last row's key parts in kscratch */
} ImagePlan;

static void ImagePlan_dealloc(ImagePlan *self) {
    Py_XDECREF(self->names);
    Py_XDECREF(self->key_prefix);
    PyMem_Free(self->kinds);
    PyMem_Free(self->pa);
    PyMem_Free(self->pb);
    PyMem_Free(self->scratch);
    PyMem_Free(self->key_cols);
    PyMem_Free(self->seg_start);
    PyMem_Free(self->seg_len);
    PyMem_Free(self->key_part);
    PyMem_Free(self->kscratch);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int column_spec(ImagePlan *self, Py_ssize_t i, PyObject *spec) {
    int kind, a, b;
    if (!PyTuple_Check(spec) || !PyArg_ParseTuple(spec, "iii", &kind, &a, &b)) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "a column is (kind, a, b)");
        return -1;
    }
    int bad = kind < 0 || kind > K_LAST;
    if ((kind == K_TEXT || kind == K_HEX || kind == K_HEX_BARE) && (a < 1 || a > 4 || b < 0 || b > 255))
        bad = 1;
    if (kind == K_DECIMAL && (a < 1 || a > 65 || b < 0 || b > 30 || b > a))
        bad = 1;
    if ((kind == K_DATETIME2 || kind == K_TIMESTAMP2) && (a < 0 || a > 6))
        bad = 1;
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "unknown column kind or parameters");
        return -1;
    }
    self->kinds[i] = (unsigned char)kind;
    self->pa[i] = a;
    self->pb[i] = b;
    if (kind == K_HEX || kind == K_HEX_BARE)
        self->pad_len += 2 * (Py_ssize_t)b;
    return 0;
}

static int ImagePlan_init(ImagePlan *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"columns", "names", "drop_nulls", "key_columns", "key_prefix", NULL};
    PyObject *columns, *names, *key_columns = NULL, *key_prefix = NULL;
    int drop_nulls;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O!p|O!S", kwlist, &PyTuple_Type, &columns, &PyTuple_Type,
                                     &names, &drop_nulls, &PyTuple_Type, &key_columns, &key_prefix))
        return -1;
    if (self->names != NULL) {
        PyErr_SetString(PyExc_TypeError, "ImagePlan is initialised once");
        return -1;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(columns);
    if (PyTuple_GET_SIZE(names) != n) {
        PyErr_SetString(PyExc_ValueError, "columns and names must have one item per column");
        return -1;
    }
    self->kinds = PyMem_Malloc((size_t)n + 1);
    self->pa = PyMem_New(int, (size_t)n + 1);
    self->pb = PyMem_New(int, (size_t)n + 1);
    self->seg_start = PyMem_New(Py_ssize_t, (size_t)n + 1);
    self->seg_len = PyMem_New(Py_ssize_t, (size_t)n + 1);
    self->key_part = PyMem_Calloc((size_t)n + 1, 1);
    if (!self->kinds || !self->pa || !self->pb || !self->seg_start || !self->seg_len || !self->key_part) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (column_spec(self, i, PyTuple_GET_ITEM(columns, i)) < 0)
            return -1;
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
        if (self->key_cols == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        for (Py_ssize_t j = 0; j < nkey; j++) {
            Py_ssize_t c = PyLong_AsSsize_t(PyTuple_GET_ITEM(key_columns, j));
            if (c == -1 && PyErr_Occurred())
                return -1;
            if (c < 0 || c >= n || self->kinds[c] == K_DOUBLE || self->kinds[c] == K_FLOAT) {
                PyErr_SetString(PyExc_ValueError, "key column index out of range, or a floating-point key column");
                return -1;
            }
            self->key_cols[j] = c;
            self->key_part[c] = 1;
        }
        key_prefix = key_prefix == NULL ? PyBytes_FromStringAndSize("", 0) : Py_NewRef(key_prefix);
        if (key_prefix == NULL)
            return -1;
        self->key_prefix = key_prefix;
    }
    self->nkey = nkey;
    self->names = Py_NewRef(names);
    self->ncols = n;
    self->names_len = total;
    self->drop_nulls = drop_nulls;
    return 0;
}

static char *put_u64(char *out, uint64_t v) {
    char tmp[24];
    int k = 0;
    do {
        tmp[k++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (k)
        *out++ = tmp[--k];
    return out;
}

static char *put_i64(char *out, int64_t v) {
    if (v < 0) {
        *out++ = '-';
        return put_u64(out, (uint64_t)0 - (uint64_t)v);
    }
    return put_u64(out, (uint64_t)v);
}

/* v zero-padded to `width` digits (v < 10**width). */
static char *put_padded(char *out, uint64_t v, int width) {
    for (int k = width - 1; k >= 0; k--) {
        out[k] = (char)('0' + v % 10);
        v /= 10;
    }
    return out + width;
}

static uint64_t le(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int k = n - 1; k >= 0; k--)
        v = v << 8 | p[k];
    return v;
}

static uint64_t be(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int k = 0; k < n; k++)
        v = v << 8 | p[k];
    return v;
}

/* A double as orjson writes it (put_double_repr); NaN and infinities: not here. */
static char *put_double(char *out, double d) { return Py_IS_FINITE(d) ? put_double_repr(out, d) : NULL; }

/* types.float32 of the 4-byte float f, then written as orjson writes that double: the first of f's '%.{d}g'
 * texts (d from 6, or from 1 for a subnormal, to 9) that reads back as a double packing to the same 4 bytes;
 * the double of f itself if none does. Non-finite values and a candidate the reference's struct.pack would refuse
 * (one rounding past the largest float): NULL. */
static char *put_float32(char *out, float f) {
    if (!Py_IS_FINITE(f))
        return NULL;
    double value = (double)f;
    for (int digits = fabs(value) >= (double)FLT_MIN ? 6 : 1; digits < 10; digits++) {
        char *text = PyOS_double_to_string(value, 'g', digits, 0, NULL);
        if (text == NULL) {
            PyErr_Clear();
            return NULL;
        }
        double candidate = PyOS_string_to_double(text, NULL, NULL);
        PyMem_Free(text);
        if (candidate == -1.0 && PyErr_Occurred()) {
            PyErr_Clear();
            return NULL;
        }
        float packed = (float)candidate;
        if (Py_IS_INFINITY(packed))
            return NULL;
        if (memcmp(&packed, &f, sizeof f) == 0)
            return put_double(out, candidate);
    }
    return put_double(out, value);
}

static const int DIG2BYTES[10] = {0, 1, 1, 2, 2, 3, 3, 4, 4, 4};
static const uint64_t POW10[10] = {1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000, 1000000000};

/* MySQL's binary DECIMAL (decimal2bin) at s, `size` bytes, as jsonb.decimal_reader's text: the sign in the top
 * bit (a negative value has every bit inverted), base-10**9 groups of 4 bytes, the integer part's leading and
 * the fraction's trailing remainder digits in as few bytes as they need. A group beyond its digits (which the
 * server never writes, and the reference renders by plain arithmetic): NULL. */
static char *put_decimal(char *out, const unsigned char *s, int precision, int scale) {
    int intg0 = (precision - scale) / 9, intg0x = (precision - scale) % 9;
    int frac0 = scale / 9, frac0x = scale % 9;
    int lead = DIG2BYTES[intg0x], tail = DIG2BYTES[frac0x];
    unsigned char flip = (s[0] & 0x80) ? 0 : 0xFF; /* negative: every bit inverted */
    unsigned char b[40];
    int size = lead + 4 * intg0 + 4 * frac0 + tail;
    for (int k = 0; k < size; k++)
        b[k] = s[k] ^ flip;
    b[0] ^= 0x80;
    if (flip)
        *out++ = '-';
    /* the integer part's digits, then without its leading zeros (at least one digit) */
    char digits[80];
    char *d = digits;
    const unsigned char *p = b;
    if (lead) {
        uint64_t v = be(p, lead);
        if (v >= POW10[intg0x])
            return NULL;
        d = put_padded(d, v, intg0x);
        p += lead;
    }
    for (int g = 0; g < intg0; g++, p += 4) {
        uint64_t v = be(p, 4);
        if (v >= POW10[9])
            return NULL;
        d = put_padded(d, v, 9);
    }
    char *first = digits;
    while (first < d - 1 && *first == '0')
        first++;
    if (first == d) {
        *out++ = '0';
    } else {
        memcpy(out, first, (size_t)(d - first));
        out += d - first;
    }
    if (!scale)
        return out;
    *out++ = '.';
    for (int g = 0; g < frac0; g++, p += 4) {
        uint64_t v = be(p, 4);
        if (v >= POW10[9])
            return NULL;
        out = put_padded(out, v, 9);
    }
    if (tail) {
        uint64_t v = be(p, tail);
        if (v >= POW10[frac0x])
            return NULL;
        out = put_padded(out, v, frac0x);
    }
    return out;
}

static int decimal_size(int precision, int scale) {
    int intg = precision - scale;
    return DIG2BYTES[intg % 9] + 4 * (intg / 9) + 4 * (scale / 9) + DIG2BYTES[scale % 9];
}

static int leap(int64_t y) { return y % 4 == 0 && (y % 100 != 0 || y % 400 == 0); }

/* types.valid_day: the day exists in the month (year 0 a leap year, as the proleptic Gregorian calendar has). */
static int valid_date(int64_t y, int m, int d) {
    static const int DAYS[13] = {0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m < 1 || m > 12 || d < 1)
        return 0;
    if (d <= 28)
        return 1;
    if (m == 2 && d == 29)
        return leap(y);
    return d <= DAYS[m];
}

static char *put_ymd(char *out, int64_t y, int m, int d) {
    if (y < 10000)
        out = put_padded(out, (uint64_t)y, 4);
    else
        out = put_u64(out, (uint64_t)y);
    *out++ = '-';
    out = put_padded(out, (uint64_t)m, 2);
    *out++ = '-';
    return put_padded(out, (uint64_t)d, 2);
}

static char *put_hms(char *out, int h, int mi, int s) {
    *out++ = 'T';
    out = put_padded(out, (uint64_t)h, 2);
    *out++ = ':';
    out = put_padded(out, (uint64_t)mi, 2);
    *out++ = ':';
    return put_padded(out, (uint64_t)s, 2);
}

/* The fraction of DATETIME2/TIMESTAMP2: (fsp+1)/2 big-endian bytes of 2, 4 or 6 digits, cut to fsp digits. */
static char *put_fraction(char *out, const unsigned char *p, int fsp) {
    int nfrac = (fsp + 1) / 2;
    if (!nfrac)
        return out;
    uint64_t v = be(p, nfrac);
    if (v >= POW10[2 * nfrac]) /* the reference's text would be longer than its digits */
        return NULL;
    char tmp[8];
    put_padded(tmp, v, 2 * nfrac);
    *out++ = '.';
    memcpy(out, tmp, (size_t)fsp);
    return out + fsp;
}

/* Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's civil_from_days). */
static void civil(int64_t z, int64_t *y, int *m, int *d) {
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

/* The size in the row image of a value of kind k at s (length-prefixed kinds: read from s), or -1 when it runs
 * past `avail` bytes. */
static Py_ssize_t value_size(const ImagePlan *self, Py_ssize_t i, const unsigned char *s, Py_ssize_t avail) {
    static const signed char FIXED[] = {1, 1, 2, 2, 3, 3, 4, 4, 8, 8};
    int k = self->kinds[i];
    Py_ssize_t size;
    switch (k) {
    case K_TEXT:
    case K_HEX:
    case K_HEX_BARE:
        if (self->pa[i] > avail)
            return -1;
        size = self->pa[i] + (Py_ssize_t)le(s, self->pa[i]);
        break;
    case K_DECIMAL:
        size = decimal_size(self->pa[i], self->pb[i]);
        break;
    case K_DATE:
        size = 3;
        break;
    case K_DATETIME2:
        size = 5 + (self->pa[i] + 1) / 2;
        break;
    case K_TIMESTAMP2:
        size = 4 + (self->pa[i] + 1) / 2;
        break;
    case K_DOUBLE:
        size = 8;
        break;
    case K_FLOAT:
        size = 4;
        break;
    case K_YEAR:
        size = 1;
        break;
    default:
        size = FIXED[k];
    }
    return size <= avail ? size : -1;
}

/* The non-NULL value of column i at s (size bytes, prefix included) rendered into out as the reference writes it
 * in the data section; NULL: not rendered here (the pure path decides). */
static char *put_value(const ImagePlan *self, Py_ssize_t i, char *out, const unsigned char *s, Py_ssize_t size) {
    int a = self->pa[i], b = self->pb[i];
    switch (self->kinds[i]) {
    case K_I8:
        return put_i64(out, (int8_t)s[0]);
    case K_U8:
        return put_u64(out, s[0]);
    case K_I16:
        return put_i64(out, (int16_t)le(s, 2));
    case K_U16:
        return put_u64(out, le(s, 2));
    case K_I24: {
        int64_t v = (int64_t)le(s, 3);
        return put_i64(out, v >= 0x800000 ? v - 0x1000000 : v);
    }
    case K_U24:
        return put_u64(out, le(s, 3));
    case K_I32:
        return put_i64(out, (int32_t)(uint32_t)le(s, 4));
    case K_U32:
        return put_u64(out, le(s, 4));
    case K_I64:
        return put_i64(out, (int64_t)le(s, 8));
    case K_U64:
        return put_u64(out, le(s, 8));
    case K_TEXT:
        *out++ = '"';
        if ((out = put_escaped(out, s + a, size - a, 0)) == NULL)
            return NULL;
        *out++ = '"';
        return out;
    case K_HEX:
    case K_HEX_BARE: {
        *out++ = '"';
        if (self->kinds[i] == K_HEX) {
            *out++ = '0';
            *out++ = 'x';
        }
        for (Py_ssize_t k = a; k < size; k++) {
            *out++ = HEX[s[k] >> 4];
            *out++ = HEX[s[k] & 15];
        }
        for (Py_ssize_t k = size - a; k < b; k++) { /* BINARY(n): the trailing zero bytes the binlog drops */
            *out++ = '0';
            *out++ = '0';
        }
        *out++ = '"';
        return out;
    }
    case K_DECIMAL:
        *out++ = '"';
        if ((out = put_decimal(out, s, a, b)) == NULL)
            return NULL;
        *out++ = '"';
        return out;
    case K_DATE: {
        uint64_t v = le(s, 3);
        int64_t y = (int64_t)(v >> 9);
        int m = (int)(v >> 5 & 15), d = (int)(v & 31);
        if (b && !valid_date(y, m, d))
            return NULL;
        *out++ = '"';
        out = put_ymd(out, y, m, d);
        *out++ = '"';
        return out;
    }
    case K_DATETIME2: {
        int64_t v = (int64_t)be(s, 5) - 0x8000000000LL;
        if (v < 0)
            return NULL;
        int64_t ymd = v >> 17, hms = v & 0x1FFFF, ym = ymd >> 5;
        int64_t y = ym / 13;
        int m = (int)(ym % 13), d = (int)(ymd & 31);
        int h = (int)(hms >> 12), mi = (int)(hms >> 6 & 63), sec = (int)(hms & 63);
        if (!valid_date(y, m, d) || h >= 24 || mi >= 60 || sec >= 60)
            return NULL; /* the server's own text, or null: the pure path */
        *out++ = '"';
        out = put_ymd(out, y, m, d);
        out = put_hms(out, h, mi, sec);
        if ((out = put_fraction(out, s + 5, a)) == NULL)
            return NULL;
        *out++ = '"';
        return out;
    }
    case K_TIMESTAMP2: {
        int64_t sec = (int64_t)be(s, 4);
        if (sec == 0)
            return NULL; /* the zero TIMESTAMP: the pure path */
        int64_t y;
        int m, d;
        civil(sec / 86400, &y, &m, &d);
        int64_t t = sec % 86400;
        *out++ = '"';
        out = put_ymd(out, y, m, d);
        out = put_hms(out, (int)(t / 3600), (int)(t / 60 % 60), (int)(t % 60));
        if ((out = put_fraction(out, s + 4, a)) == NULL)
            return NULL;
        *out++ = 'Z';
        *out++ = '"';
        return out;
    }
    case K_DOUBLE: {
        double d;
        uint64_t bits = le(s, 8);
        memcpy(&d, &bits, 8);
        return put_double(out, d);
    }
    case K_YEAR:
        return put_u64(out, s[0] ? (uint64_t)s[0] + 1900 : 0);
    case K_FLOAT: {
        float f;
        uint32_t bits = (uint32_t)le(s, 4);
        memcpy(&f, &bits, 4);
        return put_float32(out, f);
    }
    }
    return NULL;
}

/* The most one value may take in the output beyond 6 bytes per input byte (\u00xx): quotes, "0x", a DECIMAL's
 * 65 digits with sign and point, a double's 24 characters plus "0.0000". BINARY padding is counted apart. */
#define VALUE_SLACK 80

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

/* The partition key from the key parts rendered into kscratch[0:kout]: prefix + parts joined by '.'. */
static PyObject *assemble_key(ImagePlan *self, Py_ssize_t used) {
    Py_ssize_t plen = PyBytes_GET_SIZE(self->key_prefix);
    Py_ssize_t total = plen + self->nkey - 1;
    for (Py_ssize_t j = 0; j < self->nkey; j++) {
        Py_ssize_t c = self->key_cols[j];
        total += self->seg_start[c] < 0 ? 4 : self->seg_len[c];
    }
    if (reserve(&self->kscratch, &self->kcap, (size_t)(used + total)) < 0)
        return NULL;
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

/* One row image at buf[*pos:end] rendered into self->scratch; returns the end of the output (the data section
 * from scratch to it) and moves *pos past the image; NULL with no exception set: not rendered here. With keys,
 * the key parts go to kscratch (seg_start/seg_len). */
static char *render_image(ImagePlan *self, const unsigned char *buf, Py_ssize_t *pos, Py_ssize_t end, int keys) {
    Py_ssize_t p = *pos, ncols = self->ncols, nb = (ncols + 7) / 8;
    if (p + nb > end)
        return NULL;
    const unsigned char *nulls = buf + p;
    p += nb;
    char *out = self->scratch, *kout = self->kscratch;
    int first = 1;
    *out++ = '{';
    for (Py_ssize_t i = 0; i < ncols; i++) {
        PyObject *name = PyTuple_GET_ITEM(self->names, i);
        int key = keys && self->key_part[i];
        if (nulls[i >> 3] >> (i & 7) & 1) {
            if (key)
                self->seg_start[i] = -1;
            if (name != Py_None && !self->drop_nulls) {
                if (!first)
                    *out++ = ',';
                memcpy(out, PyBytes_AS_STRING(name), (size_t)PyBytes_GET_SIZE(name));
                out += PyBytes_GET_SIZE(name);
                memcpy(out, "null", 4);
                out += 4;
                first = 0;
            }
            continue;
        }
        Py_ssize_t size = value_size(self, i, buf + p, end - p);
        if (size < 0)
            return NULL;
        char *mark = out;
        if (name != Py_None) {
            if (!first)
                *out++ = ',';
            memcpy(out, PyBytes_AS_STRING(name), (size_t)PyBytes_GET_SIZE(name));
            out += PyBytes_GET_SIZE(name);
        }
        /* A column the record leaves out is still rendered: the reference decodes (and checks) every value. */
        char *value = out;
        if ((out = put_value(self, i, out, buf + p, size)) == NULL)
            return NULL;
        if (key) {
            /* key_text(): a string as is (unescaped), other values as written in the data section, unquoted */
            const char *from = value;
            Py_ssize_t len = out - value;
            if (self->kinds[i] == K_TEXT) {
                from = (const char *)buf + p + self->pa[i];
                len = size - self->pa[i];
            } else if (*value == '"') {
                from++;
                len -= 2;
            }
            memcpy(kout, from, (size_t)len);
            self->seg_start[i] = kout - self->kscratch;
            self->seg_len[i] = len;
            kout += len;
        }
        if (name == Py_None)
            out = mark;
        else
            first = 0;
        p += size;
    }
    *out++ = '}';
    *pos = p;
    self->kused = kout - self->kscratch;
    return out;
}

/* render(buf, pos, end, update) -> ([(data, key), ...], pos): the rows of a row event's body from pos, up to
 * end or the first row not rendered here (pos is then that row's start). update: each row is a before and an
 * after image; the before image is checked as the reference path decodes it, then dropped (an eligible mapping
 * writes no before image), and the record is the after image's. */
static PyObject *ImagePlan_render(ImagePlan *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "render(buf, pos, end, update)");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *rows = NULL, *result = NULL;
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    Py_ssize_t end = PyLong_AsSsize_t(args[2]);
    int update = PyObject_IsTrue(args[3]);
    if ((pos == -1 || end == -1) && PyErr_Occurred())
        goto done;
    if (update < 0)
        goto done;
    if (pos < 0 || end > view.len)
        end = pos; /* nothing rendered: the pure path reports it */
    const unsigned char *buf = view.buf;
    /* A row's output: 6 bytes per input byte, the slack per column, BINARY padding, names, braces. */
    size_t need = 2 + (size_t)self->names_len + (size_t)self->ncols * (VALUE_SLACK + 6) + (size_t)self->pad_len;
    if ((rows = PyList_New(0)) == NULL)
        goto done;
    while (pos < end) {
        Py_ssize_t at = pos, avail = end - pos;
        if (reserve(&self->scratch, &self->cap, need + 6 * (size_t)avail) < 0)
            goto done;
        /* a key part is at most its value's rendering */
        if (self->nkey && reserve(&self->kscratch, &self->kcap, need + 2 * (size_t)avail) < 0)
            goto done;
        char *out;
        if (update) {
            out = render_image(self, buf, &pos, end, 0);
            if (out == NULL)
                break;
        }
        out = render_image(self, buf, &pos, end, self->nkey > 0);
        if (out == NULL) {
            pos = at;
            break;
        }
        PyObject *data = PyBytes_FromStringAndSize(self->scratch, out - self->scratch);
        if (data == NULL)
            goto done;
        PyObject *key = Py_None;
        if (self->nkey) {
            key = assemble_key(self, self->kused);
            if (key == NULL) {
                Py_DECREF(data);
                goto done;
            }
        } else {
            Py_INCREF(key);
        }
        PyObject *pair = PyTuple_New(2);
        if (pair == NULL) {
            Py_DECREF(data);
            Py_DECREF(key);
            goto done;
        }
        PyTuple_SET_ITEM(pair, 0, data);
        PyTuple_SET_ITEM(pair, 1, key);
        int failed = PyList_Append(rows, pair);
        Py_DECREF(pair);
        if (failed)
            goto done;
    }
    result = Py_BuildValue("(On)", rows, pos);
done:
    Py_XDECREF(rows);
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef ImagePlan_methods[] = {
    {"render", (PyCFunction)(void (*)(void))ImagePlan_render, METH_FASTCALL,
     "render(buf, pos, end, update) -> ([(data JSON bytes, partition key or None), ...], where rendering stopped)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ImagePlanType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "cdcstream.sources.mysql._fused.ImagePlan",
    .tp_basicsize = sizeof(ImagePlan),
    .tp_dealloc = (destructor)ImagePlan_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One table version's compiled row-image renderer: column kinds and JSON-encoded output names.",
    .tp_methods = ImagePlan_methods,
    .tp_init = (initproc)ImagePlan_init,
    .tp_new = PyType_GenericNew,
};

static struct PyModuleDef fused_module = {
    PyModuleDef_HEAD_INIT, "_fused", "Compiled fused binlog row-image renderer (see fused.py).", -1, NULL,
};

PyMODINIT_FUNC PyInit__fused(void) {
    if (PyType_Ready(&ImagePlanType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&fused_module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "ImagePlan", (PyObject *)&ImagePlanType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

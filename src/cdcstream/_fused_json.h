/* JSON text as orjson writes it, shared by the compiled extensions (sources/postgres/_fused.c,
 * sources/mysql/_fused.c, sinks/_putrecords.c): strings (escapes, and the UTF-8 check Python's strict decoder
 * makes), doubles, and the base64 of PutRecords entries.
 * Each renderer's fused.py checks these against the installed orjson at import. Static functions: each
 * extension compiles its own copy. */
#ifndef CDCSTREAM_FUSED_JSON_H
#define CDCSTREAM_FUSED_JSON_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* A finite double as orjson writes it: Python's repr (the shortest digits that read back as the same double)
 * except that orjson writes exponent -5 in positional notation (0.00001) and negative exponents without a
 * leading zero (1e-7). Returns the end of the output, or NULL (no memory: not rendered here). */
static char *put_double_repr(char *out, double d) {
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

/* Standard base64 with '=' padding and no newline, as binascii.b2a_base64(data, newline=False) writes it (the
 * PutRecords entries' Data). */
static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static inline char *put_base64(char *out, const unsigned char *s, Py_ssize_t n) {
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

#endif

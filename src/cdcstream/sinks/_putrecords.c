/* The PutRecords request body in one C call: an optional extension of the sink (sinks/putrecords.py, whose
 * build_plain_body is the reference; tests/unit/test_putrecords_body.py holds them equal byte for byte, and an
 * import-time probe falls back to Python if they ever differ). Kept apart from the sources' row renderers so the
 * sink stage imports nothing of a source (tests/unit/test_import_rules.py). */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#include "../_fused_json.h"

/* ---- PutRecords request bodies (sinks/putrecords.py: build_body is the reference) ----------------------------
 *
 * put_records_body(head, records, keys, counts): head + the entries joined by ',' + "]}", each entry
 * {"Data":"<base64 of record.data>","PartitionKey":<key as orjson writes a str>}, or record.entry as is when a
 * mapping worker built it for the same key. keys[i] owns the next counts[i] records (sinks/batching.py's Batch).
 * One pass over the batch into one bytes object: no per-record Python object, no join of hundreds of parts. */

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

/* ---- A run of records into the batcher (sinks/batching.py: Batcher.add_run is the reference) ------------------
 *
 * add_run(records, start, stop, max_size, room, overhead, queues, fresh, in_flight) -> (end, nbytes, fresh_bytes,
 * new_key, rare): the two common cases of Batcher.add for records[start:stop], in order: a key with a queue (the
 * record is appended to it) and a key with nothing pending nor in flight (the record goes to the fast lane, dict
 * fresh). Stops before a record whose key is empty or over 256 characters or whose data + key bytes exceed max_size,
 * and before the next record once the records added take room bytes (each its data + key bytes + overhead), as the
 * reference does; also stops (rare = 1) before a record whose key waits in the fast lane or is in flight, which the
 * caller adds itself. nbytes: data + key bytes added; fresh_bytes: those that went to the fast lane. */

static PyObject *add_run(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 9 || !PyList_Check(args[0]) || !PyDict_Check(args[6]) || !PyDict_Check(args[7]) ||
        !PyAnySet_Check(args[8])) {
        PyErr_SetString(PyExc_TypeError,
                        "add_run(records: list, start, stop, max_size, room, overhead, queues: dict, fresh: dict, "
                        "in_flight: set)");
        return NULL;
    }
    PyObject *records = args[0], *queues = args[6], *fresh = args[7], *in_flight = args[8];
    Py_ssize_t start = PyLong_AsSsize_t(args[1]), stop = PyLong_AsSsize_t(args[2]);
    long long max_size = PyLong_AsLongLong(args[3]), room = PyLong_AsLongLong(args[4]),
              overhead = PyLong_AsLongLong(args[5]);
    if (PyErr_Occurred())
        return NULL;
    if (stop > PyList_GET_SIZE(records))
        stop = PyList_GET_SIZE(records);
    static PyObject *s_data = NULL, *s_key = NULL, *s_append = NULL;
    if (s_data == NULL && ((s_data = PyUnicode_InternFromString("data")) == NULL ||
                           (s_key = PyUnicode_InternFromString("partition_key")) == NULL ||
                           (s_append = PyUnicode_InternFromString("append")) == NULL))
        return NULL;
    long long nbytes = 0, fresh_bytes = 0;
    int new_key = 0, rare = 0;
    Py_ssize_t i = start;
    for (; i < stop; i++) {
        if (nbytes + (long long)(i - start) * overhead >= room)
            break;
        PyObject *rec = PyList_GET_ITEM(records, i);
        PyObject *key = PyObject_GetAttr(rec, s_key);
        if (key == NULL)
            return NULL;
        PyObject *data = PyObject_GetAttr(rec, s_data);
        if (data == NULL) {
            Py_DECREF(key);
            return NULL;
        }
        /* Both stay alive through the record (its slots) while used here. */
        Py_DECREF(key);
        Py_DECREF(data);
        if (!PyUnicode_Check(key) || !PyBytes_Check(data)) {
            PyErr_SetString(PyExc_TypeError, "a record's partition_key must be str and its data bytes");
            return NULL;
        }
        Py_ssize_t chars = PyUnicode_GET_LENGTH(key), klen = chars;
        if (chars < 1 || chars > 256)
            break;
        if (!PyUnicode_IS_ASCII(key) && PyUnicode_AsUTF8AndSize(key, &klen) == NULL)
            return NULL;
        long long size = (long long)PyBytes_GET_SIZE(data) + klen;
        if (size > max_size)
            break;
        PyObject *q = PyDict_GetItemWithError(queues, key); /* borrowed */
        if (q != NULL) {
            PyObject *r = PyObject_CallMethodOneArg(q, s_append, rec);
            if (r == NULL)
                return NULL;
            Py_DECREF(r);
        } else {
            if (PyErr_Occurred())
                return NULL;
            int in = PyDict_Contains(fresh, key);
            if (in == 0)
                in = PySet_Contains(in_flight, key);
            if (in < 0)
                return NULL;
            if (in) {
                rare = 1;
                break;
            }
            if (PyDict_SetItem(fresh, key, rec) < 0)
                return NULL;
            fresh_bytes += size;
            new_key = 1;
        }
        nbytes += size;
    }
    return Py_BuildValue("nLLii", i, nbytes, fresh_bytes, new_key, rare);
}

static PyMethodDef putrecords_functions[] = {
    {"put_records_body", (PyCFunction)(void (*)(void))put_records_body, METH_FASTCALL,
     "put_records_body(head, records, keys, counts) -> the PutRecords request body (sinks/putrecords.py)"},
    {"add_run", (PyCFunction)(void (*)(void))add_run, METH_FASTCALL,
     "add_run(records, start, stop, max_size, room, overhead, queues, fresh, in_flight) -> (end, nbytes, "
     "fresh_bytes, new_key, rare): Batcher.add_run's common cases (sinks/batching.py)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef putrecords_module = {
    PyModuleDef_HEAD_INIT, "_putrecords", "Compiled PutRecords request body builder (see sinks/putrecords.py).", -1,
    putrecords_functions,
};

PyMODINIT_FUNC PyInit__putrecords(void) { return PyModule_Create(&putrecords_module); }

/* A run's records in two compiled calls: an optional extension of the mapping stage (mapping/envelope.py,
 * Mapper._fused_run). A run (changes.FusedRows) holds rows a source's compiled path already rendered; what is left
 * is the records' bytes around each data section and their Record objects, once per row. The reference is the
 * Mapper's per-event path (Mapper.map over FusedRows.events()): tests/unit/test_fused_runs.py holds them equal
 * byte for byte, and envelope.py checks clone_records against the class at import. Kept apart from the sources'
 * renderers so that the mapping imports nothing of a source (tests/unit/test_import_rules.py). */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdio.h>
#include <string.h>
#include <structmember.h>

/* The records of a run (Mapper): b'{"data":' + data + mids[op] + the record id (%010d) + b'"}}\n' per row, the
 * record ids counting up from first_rid; mids[op] holds the metadata up to the stream position's record id. */
static PyObject *splice_records(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4 || !PyList_Check(args[0]) || !PyBytes_Check(args[1]) || !PyTuple_Check(args[2]) ||
        PyTuple_GET_SIZE(args[2]) != 3) {
        PyErr_SetString(PyExc_TypeError, "splice_records(datas: list, ops: bytes, mids: 3-tuple of bytes, first_rid)");
        return NULL;
    }
    PyObject *datas = args[0];
    Py_ssize_t n = PyList_GET_SIZE(datas);
    if (PyBytes_GET_SIZE(args[1]) != n) {
        PyErr_SetString(PyExc_ValueError, "splice_records: one op per data section");
        return NULL;
    }
    const unsigned char *ops = (const unsigned char *)PyBytes_AS_STRING(args[1]);
    PyObject *mids[3];
    for (int j = 0; j < 3; j++) {
        mids[j] = PyTuple_GET_ITEM(args[2], j);
        if (!PyBytes_Check(mids[j])) {
            PyErr_SetString(PyExc_TypeError, "splice_records: mids must be bytes");
            return NULL;
        }
    }
    long long rid = PyLong_AsLongLong(args[3]);
    if (rid == -1 && PyErr_Occurred())
        return NULL;
    PyObject *out = PyList_New(n);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++, rid++) {
        PyObject *data = PyList_GET_ITEM(datas, i);
        if (!PyBytes_Check(data) || ops[i] > 2) {
            Py_DECREF(out);
            PyErr_SetString(PyExc_ValueError, "splice_records: data sections are bytes, ops 0-2");
            return NULL;
        }
        char digits[32];
        int nd = snprintf(digits, sizeof(digits), "%010lld", rid);
        PyObject *mid = mids[ops[i]];
        Py_ssize_t dlen = PyBytes_GET_SIZE(data), mlen = PyBytes_GET_SIZE(mid);
        PyObject *rec = PyBytes_FromStringAndSize(NULL, 8 + dlen + mlen + nd + 4);
        if (rec == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        char *r = PyBytes_AS_STRING(rec);
        memcpy(r, "{\"data\":", 8);
        memcpy(r + 8, PyBytes_AS_STRING(data), (size_t)dlen);
        memcpy(r + 8 + dlen, PyBytes_AS_STRING(mid), (size_t)mlen);
        memcpy(r + 8 + dlen + mlen, digits, (size_t)nd);
        memcpy(r + 8 + dlen + mlen + nd, "\"}}\n", 4);
        PyList_SET_ITEM(out, i, rec);
    }
    return out;
}

/* Records like `prototype` (an instance of a class with __slots__ and no __dict__, e.g. records.Record), one per
 * data section, with `data` in place of the prototype's data slot and the key (keys[i], or `keys` itself when it
 * is a str) in place of its partition_key slot; every other slot shares the prototype's value. What calling the
 * dataclass per row writes, without running its Python __init__ per row: the Mapper checks that at import. */
static PyObject *clone_records(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyList_Check(args[2]) || (!PyList_Check(args[1]) && !PyUnicode_Check(args[1]))) {
        PyErr_SetString(PyExc_TypeError, "clone_records(prototype, keys: list | str, datas: list)");
        return NULL;
    }
    PyObject *proto = args[0], *keys = args[1], *datas = args[2];
    PyTypeObject *type = Py_TYPE(proto);
    Py_ssize_t n = PyList_GET_SIZE(datas);
    if (PyList_Check(keys) && PyList_GET_SIZE(keys) != n) {
        PyErr_SetString(PyExc_ValueError, "clone_records: one key per data section");
        return NULL;
    }
    PyMemberDef *members = type->tp_members;
    if (!(type->tp_flags & Py_TPFLAGS_HEAPTYPE) || type->tp_dictoffset != 0 || members == NULL ||
        type->tp_itemsize != 0 || type->tp_base != &PyBaseObject_Type) {
        PyErr_SetString(PyExc_TypeError, "clone_records: the prototype's class must have __slots__ only");
        return NULL;
    }
    Py_ssize_t key_at = -1, data_at = -1;
    for (PyMemberDef *m = members; m->name != NULL; m++) {
        if (m->type != T_OBJECT_EX || (m->flags & READONLY)) {
            PyErr_SetString(PyExc_TypeError, "clone_records: every slot must be a plain object slot");
            return NULL;
        }
        if (*(PyObject **)((char *)proto + m->offset) == NULL) {
            PyErr_SetString(PyExc_ValueError, "clone_records: the prototype has an unset slot");
            return NULL;
        }
        if (strcmp(m->name, "partition_key") == 0)
            key_at = m->offset;
        else if (strcmp(m->name, "data") == 0)
            data_at = m->offset;
    }
    if (key_at < 0 || data_at < 0) {
        PyErr_SetString(PyExc_TypeError, "clone_records: no partition_key or data slot");
        return NULL;
    }
    PyObject *out = PyList_New(n);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *rec = type->tp_alloc(type, 0);
        if (rec == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        for (PyMemberDef *m = members; m->name != NULL; m++) {
            PyObject *v;
            if (m->offset == key_at)
                v = PyList_Check(keys) ? PyList_GET_ITEM(keys, i) : keys;
            else if (m->offset == data_at)
                v = PyList_GET_ITEM(datas, i);
            else
                v = *(PyObject **)((char *)proto + m->offset);
            *(PyObject **)((char *)rec + m->offset) = Py_NewRef(v);
        }
        PyList_SET_ITEM(out, i, rec);
    }
    return out;
}

static PyMethodDef module_methods[] = {
    {"splice_records", (PyCFunction)(void (*)(void))splice_records, METH_FASTCALL,
     "splice_records(datas, ops, mids, first_rid) -> the records of a run"},
    {"clone_records", (PyCFunction)(void (*)(void))clone_records, METH_FASTCALL,
     "clone_records(prototype, keys, datas) -> one record like prototype per data section"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef splice_module = {
    PyModuleDef_HEAD_INIT, "_splice", "A run's records in two compiled calls (see mapping/envelope.py).", -1,
    module_methods,
};

PyMODINIT_FUNC PyInit__splice(void) { return PyModule_Create(&splice_module); }

/* Compiled answers of the mapping worker processes: a chunk's records packed into one frame in the worker and
 * unpacked into Record objects in the daemon's event loop (design and the pure fallback in frames.py).
 *
 * Why: the event loop is the full load's limit. Unpickling three lists and building one Record per row through
 * the dataclass's __init__ cost it ~0.4 us per row; here a row costs three object allocations and a copy of the
 * record's slots from a prototype.
 *
 * Frame: u32 count, then per record u32 key length, the key's UTF-8, u32 data length, the data, u32 entry
 * length, the entry (little-endian lengths). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <string.h>

static void put_u32(char *p, uint32_t v) {
    p[0] = (char)(v & 0xFF);
    p[1] = (char)((v >> 8) & 0xFF);
    p[2] = (char)((v >> 16) & 0xFF);
    p[3] = (char)((v >> 24) & 0xFF);
}

static uint32_t get_u32(const unsigned char *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* pack(keys, datas, entries) -> bytes */
static PyObject *frames_pack(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyList_Check(args[0]) || !PyList_Check(args[1]) || !PyList_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "pack(keys: list[str], datas: list[bytes], entries: list[bytes])");
        return NULL;
    }
    PyObject *keys = args[0], *datas = args[1], *entries = args[2];
    Py_ssize_t n = PyList_GET_SIZE(keys);
    if (PyList_GET_SIZE(datas) != n || PyList_GET_SIZE(entries) != n || n > UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "pack: keys, datas and entries must have one item per record");
        return NULL;
    }
    Py_ssize_t total = 4;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *k = PyList_GET_ITEM(keys, i), *d = PyList_GET_ITEM(datas, i), *e = PyList_GET_ITEM(entries, i);
        if (!PyUnicode_Check(k) || !PyBytes_Check(d) || !PyBytes_Check(e)) {
            PyErr_SetString(PyExc_TypeError, "pack: keys are str, datas and entries bytes");
            return NULL;
        }
        Py_ssize_t klen;
        if (PyUnicode_AsUTF8AndSize(k, &klen) == NULL)
            return NULL;
        if (klen > UINT32_MAX || PyBytes_GET_SIZE(d) > UINT32_MAX || PyBytes_GET_SIZE(e) > UINT32_MAX) {
            PyErr_SetString(PyExc_ValueError, "pack: a record over 4 GiB");
            return NULL;
        }
        total += 12 + klen + PyBytes_GET_SIZE(d) + PyBytes_GET_SIZE(e);
    }
    PyObject *frame = PyBytes_FromStringAndSize(NULL, total);
    if (frame == NULL)
        return NULL;
    char *p = PyBytes_AS_STRING(frame);
    put_u32(p, (uint32_t)n);
    p += 4;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t klen;
        const char *k = PyUnicode_AsUTF8AndSize(PyList_GET_ITEM(keys, i), &klen); /* cached above */
        PyObject *parts[2] = {PyList_GET_ITEM(datas, i), PyList_GET_ITEM(entries, i)};
        put_u32(p, (uint32_t)klen);
        memcpy(p + 4, k, (size_t)klen);
        p += 4 + klen;
        for (int j = 0; j < 2; j++) {
            Py_ssize_t len = PyBytes_GET_SIZE(parts[j]);
            put_u32(p, (uint32_t)len);
            memcpy(p + 4, PyBytes_AS_STRING(parts[j]), (size_t)len);
            p += 4 + len;
        }
    }
    return frame;
}

/* The layout of the record class: where each of its slots is, and which are the key, data and entry. Checked
 * once per class: a plain class with __slots__ only (no __dict__, no base but object), every slot an object
 * member. records() fills a new instance by copying a prototype instance's slots, so a field added to Record
 * later gets its value from the prototype, never NULL. */
typedef struct {
    PyTypeObject *type;
    Py_ssize_t nslots;
    Py_ssize_t offsets[32];
    Py_ssize_t key, data, entry;
} Layout;

static Layout layout;

static int learn_layout(PyTypeObject *type) {
    if (layout.type == type)
        return 0;
    if (type->tp_base != &PyBaseObject_Type || type->tp_dictoffset != 0 || type->tp_alloc == NULL) {
        PyErr_SetString(PyExc_TypeError, "records: the record class must be a slots class deriving from object");
        return -1;
    }
    PyObject *slots = PyObject_GetAttrString((PyObject *)type, "__slots__");
    if (slots == NULL)
        return -1;
    PyObject *seq = PySequence_Fast(slots, "__slots__ must be a sequence");
    Py_DECREF(slots);
    if (seq == NULL)
        return -1;
    Layout found = {type, PySequence_Fast_GET_SIZE(seq), {0}, -1, -1, -1};
    int ok = found.nslots <= 32;
    for (Py_ssize_t i = 0; ok && i < found.nslots; i++) {
        PyObject *name = PySequence_Fast_GET_ITEM(seq, i);
        PyObject *descr = PyUnicode_Check(name) ? PyObject_GetAttr((PyObject *)type, name) : NULL;
        if (descr == NULL) {
            PyErr_Clear();
            ok = 0;
            break;
        }
        PyMemberDef *member = Py_IS_TYPE(descr, &PyMemberDescr_Type) ? ((PyMemberDescrObject *)descr)->d_member : NULL;
        if (member == NULL || member->type != T_OBJECT_EX || (member->flags & READONLY)) {
            ok = 0;
        } else {
            found.offsets[i] = member->offset;
            if (PyUnicode_CompareWithASCIIString(name, "partition_key") == 0)
                found.key = member->offset;
            else if (PyUnicode_CompareWithASCIIString(name, "data") == 0)
                found.data = member->offset;
            else if (PyUnicode_CompareWithASCIIString(name, "entry") == 0)
                found.entry = member->offset;
        }
        Py_DECREF(descr);
    }
    Py_DECREF(seq);
    if (!ok || found.key < 0 || found.data < 0 || found.entry < 0) {
        PyErr_SetString(PyExc_TypeError, "records: the record class's slots are not what this module knows");
        return -1;
    }
    Py_INCREF(type); /* kept: the layout is reused for as long as this class is the record class */
    Py_XDECREF(layout.type);
    layout = found;
    return 0;
}

#define SLOT(obj, offset) (*(PyObject **)((char *)(obj) + (offset)))

/* A new record: the prototype's slots, then its key, data and entry. Steals the three references. */
static PyObject *new_record(PyObject *prototype, PyObject *key, PyObject *data, PyObject *entry) {
    PyTypeObject *type = layout.type;
    PyObject *obj = type->tp_alloc(type, 0);
    if (obj == NULL) {
        Py_DECREF(key);
        Py_DECREF(data);
        Py_DECREF(entry);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < layout.nslots; i++) {
        PyObject *v = SLOT(prototype, layout.offsets[i]);
        Py_XINCREF(v);
        SLOT(obj, layout.offsets[i]) = v;
    }
    Py_XSETREF(SLOT(obj, layout.key), key);
    Py_XSETREF(SLOT(obj, layout.data), data);
    Py_XSETREF(SLOT(obj, layout.entry), entry);
    return obj;
}

/* records(frame, prototype) -> list of records like prototype with each packed key, data and entry */
static PyObject *frames_records(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "records(frame, prototype)");
        return NULL;
    }
    if (learn_layout(Py_TYPE(args[1])) < 0)
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const unsigned char *p = view.buf, *end = p + view.len;
    PyObject *out = NULL;
    if (end - p < 4)
        goto truncated;
    uint32_t n = get_u32(p);
    p += 4;
    if ((Py_ssize_t)n > (end - p) / 12)
        goto truncated;
    out = PyList_New((Py_ssize_t)n);
    if (out == NULL)
        goto done;
    for (uint32_t i = 0; i < n; i++) {
        Py_ssize_t len[3];
        const unsigned char *at[3];
        for (int j = 0; j < 3; j++) {
            if (end - p < 4)
                goto truncated;
            len[j] = (Py_ssize_t)get_u32(p);
            p += 4;
            if (end - p < len[j])
                goto truncated;
            at[j] = p;
            p += len[j];
        }
        PyObject *key = PyUnicode_DecodeUTF8((const char *)at[0], len[0], "strict");
        PyObject *data = key == NULL ? NULL : PyBytes_FromStringAndSize((const char *)at[1], len[1]);
        PyObject *entry = data == NULL ? NULL : PyBytes_FromStringAndSize((const char *)at[2], len[2]);
        if (entry == NULL) {
            Py_XDECREF(key);
            Py_XDECREF(data);
            Py_CLEAR(out);
            goto done;
        }
        PyObject *record = new_record(args[1], key, data, entry);
        if (record == NULL) {
            Py_CLEAR(out);
            goto done;
        }
        PyList_SET_ITEM(out, i, record);
    }
    if (p != end)
        goto truncated;
    goto done;
truncated:
    Py_CLEAR(out);
    PyErr_SetString(PyExc_ValueError, "records: a malformed frame");
done:
    PyBuffer_Release(&view);
    return out;
}

static PyMethodDef frames_methods[] = {
    {"pack", (PyCFunction)(void (*)(void))frames_pack, METH_FASTCALL,
     "pack(keys, datas, entries) -> one frame of a chunk's records"},
    {"records", (PyCFunction)(void (*)(void))frames_records, METH_FASTCALL,
     "records(frame, prototype) -> the frame's records: copies of prototype with each key, data and entry"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef frames_module = {
    PyModuleDef_HEAD_INIT, "_frames", "Compiled answers of the mapping worker processes (see frames.py).", -1,
    frames_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__frames(void) { return PyModule_Create(&frames_module); }

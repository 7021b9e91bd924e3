/* The detector's document prescreen over the runs of an ASCII text, in C (processors/detector.py,
 * _ascii_runs_verdict: the same verdicts, from the same remembered maps).
 *
 * runs_verdict(text, kinds, shapes, exact, by_digits, miss) -> bool
 *
 * For each maximal run of 8+ characters of "0123456789 \t().+/-" in the ASCII str `text`, with
 * the character on either side, the run's shape (1-9 as "1", 0 and the separators as they are,
 * a word character as "a", any other as '"') is looked up in `shapes`: True ends the scan (the
 * text may hold a phone or card number), False goes on to the next run, `by_digits` looks the run
 * itself up in `exact`. Whatever neither map holds is decided by the Python callback
 * miss(text, lo, hi, shape, kinds), which remembers the verdict and returns it. The maps are
 * only read here; the callback is the only writer.
 *
 * candidates(container, prefix) -> [(parent, key, path), ...]
 *
 * The string values below the dict or list `container` (any depth, through non-empty dicts and
 * lists) that may hold an email, a phone or a card number, in the order a depth-first walk meets
 * them: each with the container holding it, its key or index there and its path (`prefix`, a
 * tuple, then the keys and indices from `container`). A value is left out only when it is ASCII
 * with no "@" and fewer than 8 digits: an email needs an "@", a phone 8 and a card 13 digits,
 * and only a non-ASCII text can spell either with look-alikes (processors/masking.py, the
 * detector's walk). Only exact dicts, lists and strs are looked at, as the walk does; nothing
 * is called back, so the containers do not change while this runs.
 *
 * keys_may_hold(container) -> bool
 *
 * Whether a key of a dict at or below `container` may hold an email, a phone or a card number,
 * by the same screen (a key that is not a str counts as one that may): False lets the name
 * screen (processors/masking.py, _rename_keys) skip the container.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static unsigned char RUN[256];   /* 1 for a character phones and cards are made of */
static unsigned char SHAPE[256]; /* the shape of each ASCII character */

static void init_tables(void) {
    const char *run = "0123456789 \t().+/-";
    for (const char *p = run; *p; p++) RUN[(unsigned char)*p] = 1;
    for (int c = 0; c < 256; c++) {
        if (c >= '1' && c <= '9')
            SHAPE[c] = '1';
        else if (RUN[c])
            SHAPE[c] = (unsigned char)c;
        else if (c < 128 && ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
                             (c >= 'A' && c <= 'Z') || c == '_'))
            SHAPE[c] = 'a';
        else
            SHAPE[c] = '"';
    }
}

static PyObject *decide(PyObject *miss, PyObject *text, Py_ssize_t lo, Py_ssize_t hi,
                        PyObject *shape, PyObject *kinds) {
    PyObject *lo_obj = PyLong_FromSsize_t(lo);
    PyObject *hi_obj = lo_obj ? PyLong_FromSsize_t(hi) : NULL;
    PyObject *result = NULL;
    if (hi_obj != NULL) {
        PyObject *args[5] = {text, lo_obj, hi_obj, shape, kinds};
        result = PyObject_Vectorcall(miss, args, 5, NULL);
    }
    Py_XDECREF(lo_obj);
    Py_XDECREF(hi_obj);
    return result; /* new reference */
}

static PyObject *runs_verdict(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError,
                        "runs_verdict(text, kinds, shapes, exact, by_digits, miss)");
        return NULL;
    }
    PyObject *text = args[0], *kinds = args[1], *shapes = args[2], *exact = args[3];
    PyObject *by_digits = args[4], *miss = args[5];
    if (!PyUnicode_Check(text) || !PyUnicode_IS_ASCII(text) || !PyDict_Check(shapes) ||
        !PyDict_Check(exact)) {
        PyErr_SetString(PyExc_TypeError, "runs_verdict takes an ASCII str and two dicts");
        return NULL;
    }
    /* the text stays alive and unchanged (str is immutable) while this runs */
    const unsigned char *s = (const unsigned char *)PyUnicode_DATA(text);
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    unsigned char small[256];
    Py_ssize_t i = 0;
    while (i < n) {
        if (!RUN[s[i]]) {
            i++;
            continue;
        }
        Py_ssize_t end = i;
        while (end < n && RUN[s[end]]) end++;
        if (end - i < 8) {
            i = end;
            continue;
        }
        Py_ssize_t lo = i ? i - 1 : 0;
        Py_ssize_t hi = end < n ? end + 1 : n;
        Py_ssize_t len = hi - lo;
        unsigned char *buf = len <= (Py_ssize_t)sizeof(small) ? small : PyMem_Malloc(len);
        if (buf == NULL) return PyErr_NoMemory();
        for (Py_ssize_t k = 0; k < len; k++) buf[k] = SHAPE[s[lo + k]];
        PyObject *shape = PyBytes_FromStringAndSize((const char *)buf, len);
        if (buf != small) PyMem_Free(buf);
        if (shape == NULL) return NULL;
        PyObject *verdict = PyDict_GetItemWithError(shapes, shape); /* borrowed */
        if (verdict != NULL) Py_INCREF(verdict);
        if (verdict == by_digits) {
            Py_DECREF(verdict);
            PyObject *run = PyUnicode_Substring(text, lo, hi);
            if (run == NULL) {
                Py_DECREF(shape);
                return NULL;
            }
            verdict = PyDict_GetItemWithError(exact, run);
            if (verdict != NULL) Py_INCREF(verdict);
            Py_DECREF(run);
        }
        if (verdict == NULL) {
            if (PyErr_Occurred()) {
                Py_DECREF(shape);
                return NULL;
            }
            verdict = decide(miss, text, lo, hi, shape, kinds);
            if (verdict == NULL) {
                Py_DECREF(shape);
                return NULL;
            }
        }
        Py_DECREF(shape);
        int found = verdict == Py_True;
        Py_DECREF(verdict);
        if (found) Py_RETURN_TRUE;
        i = end;
    }
    Py_RETURN_FALSE;
}

/* Whether the str `v` may hold a finding: see candidates() above. */
static int may_hold(PyObject *v) {
    if (!PyUnicode_IS_ASCII(v)) return 1;
    const char *s = (const char *)PyUnicode_DATA(v);
    Py_ssize_t n = PyUnicode_GET_LENGTH(v);
    if (n < 3) return 0; /* no email ("a@b") nor 8 digits fits */
    int digits = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '@') return 1;
        if (c >= '0' && c <= '9' && ++digits >= 8) return 1;
    }
    return 0;
}

/* Whether `v` is a non-empty exact dict or list: what the walks descend into. */
static int walkable(PyObject *v) {
    return (PyDict_CheckExact(v) && PyDict_GET_SIZE(v)) ||
           (PyList_CheckExact(v) && PyList_GET_SIZE(v));
}

static PyObject *join_path(PyObject *prefix, PyObject *key) {
    Py_ssize_t n = PyTuple_GET_SIZE(prefix);
    PyObject *path = PyTuple_New(n + 1);
    if (path == NULL) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyTuple_GET_ITEM(prefix, i);
        Py_INCREF(item);
        PyTuple_SET_ITEM(path, i, item);
    }
    Py_INCREF(key);
    PyTuple_SET_ITEM(path, n, key);
    return path;
}

static int visit_value(PyObject *out, PyObject *parent, PyObject *key, PyObject *value,
                       PyObject *prefix);

static int visit_container(PyObject *out, PyObject *container, PyObject *prefix) {
    if (Py_EnterRecursiveCall(" in the PII candidates walk")) return -1;
    int rc = 0;
    if (PyDict_CheckExact(container)) {
        Py_ssize_t pos = 0;
        PyObject *key, *value;
        while (PyDict_Next(container, &pos, &key, &value)) {
            if ((rc = visit_value(out, container, key, value, prefix)) < 0) break;
        }
    } else {
        Py_ssize_t n = PyList_GET_SIZE(container);
        for (Py_ssize_t i = 0; i < n && rc == 0; i++) {
            PyObject *index = PyLong_FromSsize_t(i);
            if (index == NULL) {
                rc = -1;
                break;
            }
            rc = visit_value(out, container, index, PyList_GET_ITEM(container, i), prefix);
            Py_DECREF(index);
        }
    }
    Py_LeaveRecursiveCall();
    return rc;
}

static int visit_value(PyObject *out, PyObject *parent, PyObject *key, PyObject *value,
                       PyObject *prefix) {
    if (PyUnicode_CheckExact(value)) {
        if (!may_hold(value)) return 0;
        PyObject *path = join_path(prefix, key);
        if (path == NULL) return -1;
        PyObject *item = PyTuple_Pack(3, parent, key, path);
        Py_DECREF(path);
        if (item == NULL) return -1;
        int rc = PyList_Append(out, item);
        Py_DECREF(item);
        return rc;
    }
    if (!walkable(value)) return 0;
    PyObject *path = join_path(prefix, key);
    if (path == NULL) return -1;
    int rc = visit_container(out, value, path);
    Py_DECREF(path);
    return rc;
}

static PyObject *candidates(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !(PyDict_CheckExact(args[0]) || PyList_CheckExact(args[0])) ||
        !PyTuple_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "candidates(dict or list, prefix tuple)");
        return NULL;
    }
    PyObject *out = PyList_New(0);
    if (out == NULL) return NULL;
    if (visit_container(out, args[0], args[1]) < 0) {
        Py_DECREF(out);
        return NULL;
    }
    return out;
}

static int keys_walk(PyObject *container) {
    if (Py_EnterRecursiveCall(" in the PII keys screen")) return -1;
    int found = 0;
    if (PyDict_CheckExact(container)) {
        Py_ssize_t pos = 0;
        PyObject *key, *value;
        while (!found && PyDict_Next(container, &pos, &key, &value)) {
            if (!PyUnicode_CheckExact(key) || may_hold(key)) {
                found = 1;
                break;
            }
            if (walkable(value)) found = keys_walk(value);
        }
    } else {
        Py_ssize_t n = PyList_GET_SIZE(container);
        for (Py_ssize_t i = 0; i < n && !found; i++) {
            PyObject *value = PyList_GET_ITEM(container, i);
            if (walkable(value)) found = keys_walk(value);
        }
    }
    Py_LeaveRecursiveCall();
    return found; /* 1, 0 or -1 (an error set) */
}

static PyObject *keys_may_hold(PyObject *module, PyObject *container) {
    if (!PyDict_CheckExact(container) && !PyList_CheckExact(container)) {
        PyErr_SetString(PyExc_TypeError, "keys_may_hold(dict or list)");
        return NULL;
    }
    int found = keys_walk(container);
    if (found < 0) return NULL;
    return PyBool_FromLong(found);
}

static PyMethodDef methods[] = {
    {"runs_verdict", (PyCFunction)(void (*)(void))runs_verdict, METH_FASTCALL,
     "Whether a run of the ASCII text may hold a phone or card number (see the module)."},
    {"candidates", (PyCFunction)(void (*)(void))candidates, METH_FASTCALL,
     "The string values below a container that may hold PII, with where (see the module)."},
    {"keys_may_hold", (PyCFunction)keys_may_hold, METH_O,
     "Whether a key at or below a container may hold PII (see the module)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "processors._prescreen",
    .m_doc = "The PII detector's document prescreen and its walk's candidates, in C",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__prescreen(void) {
    init_tables();
    return PyModule_Create(&module);
}

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

static PyMethodDef methods[] = {
    {"runs_verdict", (PyCFunction)(void (*)(void))runs_verdict, METH_FASTCALL,
     "Whether a run of the ASCII text may hold a phone or card number (see the module)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "processors._prescreen",
    .m_doc = "The PII detector's document prescreen over digit runs, in C",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__prescreen(void) {
    init_tables();
    return PyModule_Create(&module);
}

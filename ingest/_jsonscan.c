/* One pass over a JSON text for the edge's sound bounds (ingest/limits.py, ingest/validation.py).
 *
 * scan(data) -> (containers, colons, has_backslash, longest_unquoted, longest_digits)
 *
 *   containers       the number of "{" and "[" bytes (anywhere: a bound on the nesting depth)
 *   colons           the number of ":" bytes (a bound on the keys)
 *   has_backslash    whether a "\" occurs (an escape: the text gets the full walk)
 *   longest_unquoted the longest run of bytes without a '"' (a bound on a key's length)
 *   longest_digits   the longest run of ASCII digits (19 or more: an integer orjson may not
 *                    keep exact)
 *
 * What the Python code worked out with bytes.count, translate and `in` (five passes and two
 * copies of the text), in one pass without copies; a bytes-like object of any size.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *scan(PyObject *module, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    const unsigned char *p = (const unsigned char *)view.buf;
    Py_ssize_t n = view.len;
    Py_ssize_t containers = 0, colons = 0, unquoted = 0, longest_unquoted = 0;
    Py_ssize_t digits = 0, longest_digits = 0;
    int backslash = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = p[i];
        if (c >= '0' && c <= '9') {
            digits++;
            unquoted++;
            continue;
        }
        if (digits > longest_digits) longest_digits = digits;
        digits = 0;
        if (c == '"') {
            if (unquoted > longest_unquoted) longest_unquoted = unquoted;
            unquoted = 0;
            continue;
        }
        unquoted++;
        if (c == '{' || c == '[')
            containers++;
        else if (c == ':')
            colons++;
        else if (c == '\\')
            backslash = 1;
    }
    if (digits > longest_digits) longest_digits = digits;
    if (unquoted > longest_unquoted) longest_unquoted = unquoted;
    PyBuffer_Release(&view);
    return Py_BuildValue("(nnNnn)", containers, colons, PyBool_FromLong(backslash),
                         longest_unquoted, longest_digits);
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_O,
     "(containers, colons, has_backslash, longest_unquoted, longest_digits) of a JSON text"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "ingest._jsonscan",
    .m_doc = "One pass over a JSON text for the edge's sound bounds",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__jsonscan(void) { return PyModule_Create(&module); }

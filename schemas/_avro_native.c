/* Native writer and reader of segflow's flat Avro record schemas (schemas/avro_compiled.py).
 *
 * schemas.avro_compiled.compile_reader validates a writer/reader schema pair and describes it as
 * a program: for each field the writer wrote, its kind (string, long, timestamp-micros or array
 * of strings), the index of null when it is a [null, X] union, and the slot its value goes to
 * (-1: the reader lacks the field, skip it); then, in the reader's field order, each key with its
 * slot or its default. A Reader object runs that program over framed bytes and returns the same
 * dict the generated Python reader returns.
 *
 * Every record is hostile input: each read is bounds-checked against the record's size, varints
 * longer than 64 bits, negative or overlong lengths and union branches out of range raise the
 * CodecError given at construction ("corrupt <what>: <reason>", with the raw bytes), as do
 * invalid UTF-8 and timestamps outside the calendar Python's datetime holds (years 1-9999).
 *
 * compile_writer describes a schema to the Writer the same way: per field its key, kind, the
 * index of null in its union and its default. A Writer writes a record dict as the generated
 * Python writer does, byte for byte, and refuses what it refuses with the same CodecError:
 * wrong types, a missing field without a default, longs beyond 64 bits, strings with no UTF-8
 * (lone surrogates). Timestamps other than an int or a datetime in UTC go through the Python
 * micros() (other time zones, subclasses, and its errors).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <datetime.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

enum { K_STRING = 0, K_LONG = 1, K_TS = 2, K_STRINGS = 3 };

#define MAX_SLOTS 256

typedef struct {
    int kind;
    int null_index; /* -1: not a union; else the branch index of null (0 or 1) */
    int slot;       /* -1: not read into the record */
} Field;

typedef struct {
    PyObject *key;     /* str */
    int slot;          /* -1: the default */
    PyObject *value;   /* the default (slot -1) */
    PyObject *factory; /* a callable making a fresh default (list, dict), or NULL */
} Out;

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    Py_ssize_t header_len;
    int micros;
    Py_ssize_t nfields;
    Field *fields;
    Py_ssize_t nout;
    Out *out;
    int nslots;
    /* the last timestamp read per field and its datetime (consecutive records share them) */
    int64_t *memo_n;
    PyObject **memo_dt;
    PyObject *error; /* CodecError */
    PyObject *what;  /* "clean_event body" */
} Reader;

/* Raise CodecError("corrupt <what>: <reason>", raw=data); takes the reference to `reason` (NULL:
 * an exception is already set). */
static void fail_with(Reader *self, PyObject *data, PyObject *reason) {
    if (reason == NULL) return;
    PyObject *msg = PyUnicode_FromFormat("corrupt %U: %U", self->what, reason);
    Py_DECREF(reason);
    if (msg == NULL) return;
    PyObject *args = PyTuple_Pack(1, msg);
    Py_DECREF(msg);
    if (args == NULL) return;
    PyObject *kwargs = Py_BuildValue("{s:O}", "raw", data);
    if (kwargs == NULL) {
        Py_DECREF(args);
        return;
    }
    PyObject *exc = PyObject_Call(self->error, args, kwargs);
    Py_DECREF(args);
    Py_DECREF(kwargs);
    if (exc == NULL) return;
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_DECREF(exc);
}

static void fail(Reader *self, PyObject *data, const char *reason) {
    fail_with(self, data, PyUnicode_FromString(reason));
}

/* Turn the pending exception (UnicodeDecodeError, OverflowError) into a CodecError naming its
 * type and message, as the Python reader does. */
static void fail_from_pending(Reader *self, PyObject *data) {
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    PyObject *text = value ? PyObject_Str(value) : NULL;
    const char *name = type ? ((PyTypeObject *)type)->tp_name : "error";
    PyObject *reason = text ? PyUnicode_FromFormat("%s: %U", name, text)
                            : PyUnicode_FromString(name);
    Py_XDECREF(text);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    fail_with(self, data, reason);
}

/* The zig-zag varint at *pos; 0 on success, else the reason it failed. */
static inline const char *read_long(const uint8_t *d, Py_ssize_t size, Py_ssize_t *pos,
                                    int64_t *out) {
    Py_ssize_t p = *pos;
    if (p < size && d[p] < 128) { /* one byte: lengths, counts, union branches */
        uint64_t z = d[p];
        *out = (int64_t)((z >> 1) ^ (~(z & 1) + 1));
        *pos = p + 1;
        return NULL;
    }
    uint64_t z = 0;
    int shift = 0;
    for (;;) {
        if (p >= size) return "record ends inside a varint";
        uint8_t b = d[p++];
        if (shift == 63 && (b & 0x7E)) return "varint longer than 64 bits";
        z |= (uint64_t)(b & 0x7F) << shift;
        if (!(b & 0x80)) break;
        shift += 7;
        if (shift > 63) return "varint longer than 10 bytes";
    }
    *out = (int64_t)((z >> 1) ^ (~(z & 1) + 1));
    *pos = p;
    return NULL;
}

/* Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's civil_from_days). */
static void civil_from_days(int64_t z, int *y, int *m, int *d) {
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = (int)(yoe + era * 400 + (*m <= 2));
}

#define MICROS_PER_DAY INT64_C(86400000000)
#define DAY_MIN INT64_C(-719162) /* 0001-01-01 */
#define DAY_MAX INT64_C(2932896) /* 9999-12-31 */

/* The aware UTC datetime of timestamp-micros n; NULL with OverflowError outside years 1-9999. */
static PyObject *from_micros(int64_t n) {
    int64_t days = n / MICROS_PER_DAY;
    int64_t rem = n % MICROS_PER_DAY;
    if (rem < 0) {
        rem += MICROS_PER_DAY;
        days -= 1;
    }
    if (days < DAY_MIN || days > DAY_MAX) {
        PyErr_SetString(PyExc_OverflowError, "date value out of range");
        return NULL;
    }
    int y, m, d;
    civil_from_days(days, &y, &m, &d);
    int64_t secs = rem / 1000000;
    int us = (int)(rem % 1000000);
    return PyDateTimeAPI->DateTime_FromDateAndTime(
        y, m, d, (int)(secs / 3600), (int)((secs / 60) % 60), (int)(secs % 60), us,
        PyDateTime_TimeZone_UTC, PyDateTimeAPI->DateTimeType);
}

static PyObject *read_record(Reader *self, PyObject *data) {
    if (!PyBytes_Check(data)) {
        PyErr_SetString(PyExc_TypeError, "the native Avro reader takes bytes");
        return NULL;
    }
    const uint8_t *d = (const uint8_t *)PyBytes_AS_STRING(data);
    Py_ssize_t size = PyBytes_GET_SIZE(data);
    if (size < self->header_len) {
        fail(self, data, "record shorter than its header");
        return NULL;
    }
    PyObject *slots[MAX_SLOTS];
    int nslots = self->nslots;
    for (int i = 0; i < nslots; i++) slots[i] = NULL;
    Py_ssize_t pos = self->header_len;
    const char *why = NULL;
    int64_t n;

    for (Py_ssize_t i = 0; i < self->nfields; i++) {
        const Field *f = &self->fields[i];
        PyObject *value = NULL;
        if (f->null_index >= 0) {
            if ((why = read_long(d, size, &pos, &n)) != NULL) goto bad;
            if (n == f->null_index) {
                if (f->slot >= 0) {
                    Py_INCREF(Py_None);
                    slots[f->slot] = Py_None;
                }
                continue;
            }
            if (n != 1 - f->null_index) {
                why = "union branch out of range";
                goto bad;
            }
        }
        switch (f->kind) {
        case K_STRING:
            if ((why = read_long(d, size, &pos, &n)) != NULL) goto bad;
            if (n < 0 || n > size - pos) {
                why = "string runs past the end of the record";
                goto bad;
            }
            if (f->slot >= 0) {
                value = PyUnicode_DecodeUTF8((const char *)d + pos, (Py_ssize_t)n, NULL);
                if (value == NULL) goto pending;
            }
            pos += (Py_ssize_t)n;
            break;
        case K_LONG:
            if ((why = read_long(d, size, &pos, &n)) != NULL) goto bad;
            if (f->slot >= 0 && (value = PyLong_FromLongLong(n)) == NULL) goto error;
            break;
        case K_TS:
            if ((why = read_long(d, size, &pos, &n)) != NULL) goto bad;
            if (f->slot < 0) break;
            if (self->micros) {
                if ((value = PyLong_FromLongLong(n)) == NULL) goto error;
            } else if (self->memo_dt[i] != NULL && self->memo_n[i] == n) {
                value = self->memo_dt[i];
                Py_INCREF(value);
            } else {
                value = from_micros(n);
                if (value == NULL) goto pending;
                PyObject *old = self->memo_dt[i];
                Py_INCREF(value);
                self->memo_dt[i] = value;
                self->memo_n[i] = n;
                Py_XDECREF(old);
            }
            break;
        case K_STRINGS: {
            if (f->slot >= 0 && (value = PyList_New(0)) == NULL) goto error;
            for (;;) {
                int64_t count;
                if ((why = read_long(d, size, &pos, &count)) != NULL) goto bad_value;
                if (count == 0) break;
                if (count < 0) {
                    if (count == INT64_MIN) {
                        why = "array block count out of range";
                        goto bad_value;
                    }
                    count = -count;
                    int64_t block_size;
                    if ((why = read_long(d, size, &pos, &block_size)) != NULL) goto bad_value;
                }
                if (count > size - pos) { /* each item takes one byte at least */
                    why = "array runs past the end of the record";
                    goto bad_value;
                }
                for (int64_t k = 0; k < count; k++) {
                    if ((why = read_long(d, size, &pos, &n)) != NULL) goto bad_value;
                    if (n < 0 || n > size - pos) {
                        why = "string runs past the end of the record";
                        goto bad_value;
                    }
                    if (value != NULL) {
                        PyObject *item =
                            PyUnicode_DecodeUTF8((const char *)d + pos, (Py_ssize_t)n, NULL);
                        if (item == NULL) {
                            Py_DECREF(value);
                            goto pending;
                        }
                        int rc = PyList_Append(value, item);
                        Py_DECREF(item);
                        if (rc < 0) {
                            Py_DECREF(value);
                            goto error;
                        }
                    }
                    pos += (Py_ssize_t)n;
                }
            }
            break;
        bad_value:
            Py_XDECREF(value);
            goto bad;
        }
        default:
            PyErr_SetString(PyExc_SystemError, "unknown field kind");
            goto error;
        }
        if (f->slot >= 0) slots[f->slot] = value;
    }

    PyObject *record = PyDict_New();
    if (record == NULL) goto error;
    for (Py_ssize_t j = 0; j < self->nout; j++) {
        const Out *o = &self->out[j];
        PyObject *value;
        if (o->slot >= 0) {
            value = slots[o->slot];
            Py_INCREF(value);
        } else if (o->factory != NULL) {
            value = PyObject_CallNoArgs(o->factory);
            if (value == NULL) {
                Py_DECREF(record);
                goto error;
            }
        } else {
            value = o->value;
            Py_INCREF(value);
        }
        int rc = PyDict_SetItem(record, o->key, value);
        Py_DECREF(value);
        if (rc < 0) {
            Py_DECREF(record);
            goto error;
        }
    }
    for (int i = 0; i < nslots; i++) Py_XDECREF(slots[i]);
    return record;

bad:
    fail(self, data, why);
    goto error;
pending:
    if (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError) ||
        PyErr_ExceptionMatches(PyExc_OverflowError))
        fail_from_pending(self, data);
error:
    for (int i = 0; i < nslots; i++) Py_XDECREF(slots[i]);
    return NULL;
}

static PyObject *Reader_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf,
                                   PyObject *kwnames) {
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs != 1 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0)) {
        PyErr_SetString(PyExc_TypeError, "a reader takes one argument: the framed bytes");
        return NULL;
    }
    return read_record((Reader *)callable, args[0]);
}

static void Reader_dealloc(Reader *self) {
    if (self->memo_dt != NULL) {
        for (Py_ssize_t i = 0; i < self->nfields; i++) Py_XDECREF(self->memo_dt[i]);
    }
    if (self->out != NULL) {
        for (Py_ssize_t j = 0; j < self->nout; j++) {
            Py_XDECREF(self->out[j].key);
            Py_XDECREF(self->out[j].value);
            Py_XDECREF(self->out[j].factory);
        }
    }
    PyMem_Free(self->fields);
    PyMem_Free(self->out);
    PyMem_Free(self->memo_n);
    PyMem_Free(self->memo_dt);
    Py_XDECREF(self->error);
    Py_XDECREF(self->what);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Reader(header_len, micros, fields, out, error, what)
 *   fields: sequence of (kind, null_index, slot) per writer field, in the writer's order
 *   out: sequence of (key, slot, default, factory) per reader field, in the reader's order */
static PyObject *Reader_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    Py_ssize_t header_len;
    int micros;
    PyObject *fields, *out, *error, *what;
    if (!PyArg_ParseTuple(args, "npOOOU", &header_len, &micros, &fields, &out, &error, &what))
        return NULL;
    Reader *self = (Reader *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->vectorcall = Reader_vectorcall;
    self->header_len = header_len;
    self->micros = micros;
    Py_INCREF(error);
    self->error = error;
    Py_INCREF(what);
    self->what = what;

    PyObject *fseq = PySequence_Fast(fields, "fields must be a sequence");
    if (fseq == NULL) goto fail;
    self->nfields = PySequence_Fast_GET_SIZE(fseq);
    self->fields = PyMem_Calloc(self->nfields ? self->nfields : 1, sizeof(Field));
    self->memo_n = PyMem_Calloc(self->nfields ? self->nfields : 1, sizeof(int64_t));
    self->memo_dt = PyMem_Calloc(self->nfields ? self->nfields : 1, sizeof(PyObject *));
    if (self->fields == NULL || self->memo_n == NULL || self->memo_dt == NULL) {
        Py_DECREF(fseq);
        PyErr_NoMemory();
        goto fail;
    }
    int max_slot = -1;
    for (Py_ssize_t i = 0; i < self->nfields; i++) {
        Field *f = &self->fields[i];
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(fseq, i), "iii", &f->kind,
                              &f->null_index, &f->slot)) {
            Py_DECREF(fseq);
            goto fail;
        }
        if (f->kind < K_STRING || f->kind > K_STRINGS || f->null_index < -1 ||
            f->null_index > 1 || f->slot < -1 || f->slot >= MAX_SLOTS) {
            Py_DECREF(fseq);
            PyErr_SetString(PyExc_ValueError, "field description out of range");
            goto fail;
        }
        if (f->slot > max_slot) max_slot = f->slot;
    }
    Py_DECREF(fseq);
    self->nslots = max_slot + 1;

    PyObject *oseq = PySequence_Fast(out, "out must be a sequence");
    if (oseq == NULL) goto fail;
    self->nout = PySequence_Fast_GET_SIZE(oseq);
    self->out = PyMem_Calloc(self->nout ? self->nout : 1, sizeof(Out));
    if (self->out == NULL) {
        Py_DECREF(oseq);
        PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t j = 0; j < self->nout; j++) {
        Out *o = &self->out[j];
        PyObject *key, *value, *factory;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(oseq, j), "UiOO", &key, &o->slot, &value,
                              &factory)) {
            Py_DECREF(oseq);
            goto fail;
        }
        if (o->slot < -1 || o->slot >= self->nslots) {
            Py_DECREF(oseq);
            PyErr_SetString(PyExc_ValueError, "output slot out of range");
            goto fail;
        }
        Py_INCREF(key);
        PyUnicode_InternInPlace(&key);
        o->key = key;
        Py_INCREF(value);
        o->value = value;
        if (factory != Py_None) {
            Py_INCREF(factory);
            o->factory = factory;
        }
    }
    Py_DECREF(oseq);
    /* every slot a field fills must be read into the record by exactly one output: an unread
     * slot would leak nothing but a slot read before it is filled would be NULL */
    for (Py_ssize_t j = 0; j < self->nout; j++) {
        int slot = self->out[j].slot;
        if (slot < 0) continue;
        int filled = 0;
        for (Py_ssize_t i = 0; i < self->nfields; i++) filled |= self->fields[i].slot == slot;
        if (!filled) {
            PyErr_SetString(PyExc_ValueError, "an output reads a slot no field fills");
            goto fail;
        }
    }
    return (PyObject *)self;

fail:
    Py_DECREF(self);
    return NULL;
}

/* -- writer ------------------------------------------------------------------------------- */

enum { K_BOOL = 4, K_DOUBLE = 5 };

typedef struct {
    PyObject *key;     /* str */
    int kind;
    int null_index;    /* -1: not a union */
    PyObject *dflt;    /* the default, NULL: the field is required */
} WField;

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    char header[16];
    Py_ssize_t header_len;
    Py_ssize_t nfields;
    WField *fields;
    /* per field: the last timestamp object written and its micros (one request's events share
     * receivedAt and often sentAt) */
    PyObject **memo_obj;
    int64_t *memo_n;
    PyObject *error;  /* CodecError */
    PyObject *micros; /* schemas.avro_compiled.micros: any timestamp but an exact UTC datetime */
    PyObject *what;   /* "clean_event v1" */
} Writer;

typedef struct {
    char *p;
    Py_ssize_t len, cap;
    char small[2048];
} Buf;

static int buf_reserve(Buf *b, Py_ssize_t extra) {
    if (b->len + extra <= b->cap) return 0;
    Py_ssize_t cap = b->cap * 2;
    while (cap < b->len + extra) cap *= 2;
    char *p;
    if (b->p == b->small) {
        p = PyMem_Malloc(cap);
        if (p != NULL) memcpy(p, b->small, b->len);
    } else {
        p = PyMem_Realloc(b->p, cap);
    }
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

static inline int put_long(Buf *b, int64_t n) {
    if (buf_reserve(b, 10) < 0) return -1;
    uint64_t z = ((uint64_t)n << 1) ^ (uint64_t)(n >> 63);
    unsigned char *p = (unsigned char *)b->p + b->len;
    while (z & ~UINT64_C(0x7F)) {
        *p++ = (unsigned char)((z & 0x7F) | 0x80);
        z >>= 7;
    }
    *p++ = (unsigned char)z;
    b->len = (char *)p - b->p;
    return 0;
}

static inline int put_bytes(Buf *b, const char *s, Py_ssize_t n) {
    if (put_long(b, n) < 0 || buf_reserve(b, n) < 0) return -1;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    return 0;
}

/* CodecError(msg) as the Python writer raises it: its own checks bare, anything else as
 * "record does not fit <what>: <exception repr>". Takes the reference to `msg` (NULL: an
 * exception is already set). */
static void wfail(Writer *self, PyObject *msg) {
    if (msg == NULL) return;
    PyObject *exc = PyObject_CallOneArg(self->error, msg);
    Py_DECREF(msg);
    if (exc != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
}

static void wfail_type(Writer *self, const char *expected, PyObject *v) {
    wfail(self, PyUnicode_FromFormat("expected %s, got %s", expected, Py_TYPE(v)->tp_name));
}

static void wfail_range(Writer *self, PyObject *v) {
    wfail(self, PyUnicode_FromFormat("long out of range: %R", v));
}

static void wfail_pending(Writer *self) {
    if (PyErr_ExceptionMatches(self->error)) return; /* the micros() checks: as they are */
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    PyObject *repr = value ? PyObject_Repr(value) : NULL;
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    if (repr == NULL) return;
    wfail(self, PyUnicode_FromFormat("record does not fit %U: %U", self->what, repr));
    Py_DECREF(repr);
}

/* Microseconds since the epoch of a timestamp value: an exact int, an exact datetime in UTC
 * here, anything else through micros() (other time zones, subclasses, and its errors). */
static int to_micros(Writer *self, PyObject *v, int64_t *out) {
    if (PyLong_CheckExact(v)) {
        int overflow;
        long long n = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (overflow) {
            wfail_range(self, v);
            return -1;
        }
        if (n == -1 && PyErr_Occurred()) return -1;
        *out = n;
        return 0;
    }
    if (PyDateTime_CheckExact(v) && ((PyDateTime_DateTime *)v)->hastzinfo &&
        ((PyDateTime_DateTime *)v)->tzinfo == PyDateTime_TimeZone_UTC) {
        int64_t y = PyDateTime_GET_YEAR(v), m = PyDateTime_GET_MONTH(v);
        int64_t d = PyDateTime_GET_DAY(v);
        /* days from civil (H. Hinnant) */
        y -= m <= 2;
        int64_t era = (y >= 0 ? y : y - 399) / 400;
        int64_t yoe = y - era * 400;
        int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
        int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        int64_t days = era * 146097 + doe - 719468;
        int64_t secs = days * 86400 + PyDateTime_DATE_GET_HOUR(v) * 3600 +
                       PyDateTime_DATE_GET_MINUTE(v) * 60 + PyDateTime_DATE_GET_SECOND(v);
        *out = secs * 1000000 + PyDateTime_DATE_GET_MICROSECOND(v);
        return 0;
    }
    PyObject *n = PyObject_CallOneArg(self->micros, v);
    if (n == NULL) return -1;
    int overflow;
    long long value = PyLong_AsLongLongAndOverflow(n, &overflow);
    if (overflow) {
        wfail_range(self, n);
        Py_DECREF(n);
        return -1;
    }
    Py_DECREF(n);
    if (value == -1 && PyErr_Occurred()) return -1;
    *out = value;
    return 0;
}

static int put_value(Writer *self, Py_ssize_t i, const WField *f, PyObject *v, Buf *b) {
    switch (f->kind) {
    case K_STRING: {
        if (!PyUnicode_Check(v)) {
            PyErr_Format(PyExc_AttributeError, "'%s' object has no attribute 'encode'",
                         Py_TYPE(v)->tp_name);
            return -1;
        }
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(v, &n);
        if (s == NULL) return -1;
        return put_bytes(b, s, n);
    }
    case K_LONG: {
        if (!PyLong_CheckExact(v)) {
            wfail_type(self, "an int", v);
            return -1;
        }
        int overflow;
        long long n = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (overflow) {
            wfail_range(self, v);
            return -1;
        }
        if (n == -1 && PyErr_Occurred()) return -1;
        return put_long(b, n);
    }
    case K_TS: {
        int64_t n;
        if (self->memo_obj[i] == v) {
            n = self->memo_n[i];
        } else {
            if (to_micros(self, v, &n) < 0) return -1;
            PyObject *old = self->memo_obj[i];
            Py_INCREF(v);
            self->memo_obj[i] = v;
            self->memo_n[i] = n;
            Py_XDECREF(old);
        }
        return put_long(b, n);
    }
    case K_BOOL:
        if (!PyBool_Check(v)) {
            wfail_type(self, "a bool", v);
            return -1;
        }
        if (buf_reserve(b, 1) < 0) return -1;
        b->p[b->len++] = v == Py_True ? 1 : 0;
        return 0;
    case K_DOUBLE: {
        PyObject *fv = PyNumber_Float(v);
        if (fv == NULL) return -1;
        double x = PyFloat_AS_DOUBLE(fv);
        Py_DECREF(fv);
        if (buf_reserve(b, 8) < 0) return -1;
        if (PyFloat_Pack8(x, b->p + b->len, 1) < 0) return -1;
        b->len += 8;
        return 0;
    }
    case K_STRINGS: {
        if (!PyList_Check(v) && !PyTuple_Check(v)) {
            wfail_type(self, "a list of strings", v);
            return -1;
        }
        Py_ssize_t count = PySequence_Fast_GET_SIZE(v);
        if (count > 0) {
            if (put_long(b, count) < 0) return -1;
            for (Py_ssize_t k = 0; k < PySequence_Fast_GET_SIZE(v); k++) {
                PyObject *item = PySequence_Fast_GET_ITEM(v, k);
                if (!PyUnicode_Check(item)) {
                    PyErr_Format(PyExc_AttributeError, "'%s' object has no attribute 'encode'",
                                 Py_TYPE(item)->tp_name);
                    return -1;
                }
                Py_ssize_t n;
                const char *s = PyUnicode_AsUTF8AndSize(item, &n);
                if (s == NULL || put_bytes(b, s, n) < 0) return -1;
            }
            if (PySequence_Fast_GET_SIZE(v) != count) { /* changed under us (another thread) */
                PyErr_SetString(PyExc_RuntimeError, "list changed size while being written");
                return -1;
            }
        }
        return put_long(b, 0);
    }
    }
    PyErr_SetString(PyExc_SystemError, "unknown field kind");
    return -1;
}

static PyObject *write_record(Writer *self, PyObject *record) {
    if (!PyDict_Check(record)) {
        PyErr_Format(PyExc_TypeError, "expected a dict, got %s", Py_TYPE(record)->tp_name);
        wfail_pending(self);
        return NULL;
    }
    Buf b;
    b.p = b.small;
    b.len = 0;
    b.cap = sizeof(b.small);
    memcpy(b.p, self->header, self->header_len);
    b.len = self->header_len;
    for (Py_ssize_t i = 0; i < self->nfields; i++) {
        const WField *f = &self->fields[i];
        PyObject *v = PyDict_GetItemWithError(record, f->key); /* borrowed */
        if (v == NULL) {
            if (PyErr_Occurred()) goto error;
            if (f->dflt == NULL) {
                PyErr_SetObject(PyExc_KeyError, f->key);
                goto error;
            }
            v = f->dflt;
        }
        Py_INCREF(v); /* a str's UTF-8 or a list's items are read while v is held */
        int rc;
        if (f->null_index >= 0) {
            if (v == Py_None) {
                rc = put_long(&b, f->null_index);
            } else {
                rc = put_long(&b, 1 - f->null_index);
                if (rc == 0) rc = put_value(self, i, f, v, &b);
            }
        } else {
            rc = put_value(self, i, f, v, &b);
        }
        Py_DECREF(v);
        if (rc < 0) goto error;
    }
    PyObject *out = PyBytes_FromStringAndSize(b.p, b.len);
    if (b.p != b.small) PyMem_Free(b.p);
    return out;
error:
    if (b.p != b.small) PyMem_Free(b.p);
    wfail_pending(self);
    return NULL;
}

static PyObject *Writer_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf,
                                   PyObject *kwnames) {
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs != 1 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0)) {
        PyErr_SetString(PyExc_TypeError, "a writer takes one argument: the record");
        return NULL;
    }
    return write_record((Writer *)callable, args[0]);
}

static void Writer_dealloc(Writer *self) {
    for (Py_ssize_t i = 0; i < self->nfields; i++) {
        if (self->fields != NULL) {
            Py_XDECREF(self->fields[i].key);
            Py_XDECREF(self->fields[i].dflt);
        }
        if (self->memo_obj != NULL) Py_XDECREF(self->memo_obj[i]);
    }
    PyMem_Free(self->fields);
    PyMem_Free(self->memo_obj);
    PyMem_Free(self->memo_n);
    Py_XDECREF(self->error);
    Py_XDECREF(self->micros);
    Py_XDECREF(self->what);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Writer(header, fields, error, micros, what)
 *   fields: sequence of (key, kind, null_index, has_default, default), in the writer's order */
static PyObject *Writer_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    const char *header;
    Py_ssize_t header_len;
    PyObject *fields, *error, *micros, *what;
    if (!PyArg_ParseTuple(args, "y#OOOU", &header, &header_len, &fields, &error, &micros, &what))
        return NULL;
    if (header_len > 16) {
        PyErr_SetString(PyExc_ValueError, "header longer than 16 bytes");
        return NULL;
    }
    Writer *self = (Writer *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->vectorcall = Writer_vectorcall;
    memcpy(self->header, header, header_len);
    self->header_len = header_len;
    Py_INCREF(error);
    self->error = error;
    Py_INCREF(micros);
    self->micros = micros;
    Py_INCREF(what);
    self->what = what;
    PyObject *seq = PySequence_Fast(fields, "fields must be a sequence");
    if (seq == NULL) goto fail;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    self->fields = PyMem_Calloc(n ? n : 1, sizeof(WField));
    self->memo_obj = PyMem_Calloc(n ? n : 1, sizeof(PyObject *));
    self->memo_n = PyMem_Calloc(n ? n : 1, sizeof(int64_t));
    if (self->fields == NULL || self->memo_obj == NULL || self->memo_n == NULL) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        goto fail;
    }
    self->nfields = n;
    for (Py_ssize_t i = 0; i < n; i++) {
        WField *f = &self->fields[i];
        PyObject *key, *dflt;
        int has_default;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "UiipO", &key, &f->kind,
                              &f->null_index, &has_default, &dflt)) {
            Py_DECREF(seq);
            goto fail;
        }
        Py_INCREF(key);
        PyUnicode_InternInPlace(&key);
        f->key = key;
        if (has_default) {
            Py_INCREF(dflt);
            f->dflt = dflt;
        }
        if (f->kind < K_STRING || f->kind > K_DOUBLE || f->null_index < -1 || f->null_index > 1) {
            Py_DECREF(seq);
            PyErr_SetString(PyExc_ValueError, "field description out of range");
            goto fail;
        }
    }
    Py_DECREF(seq);
    return (PyObject *)self;
fail:
    Py_DECREF(self);
    return NULL;
}

static PyTypeObject WriterType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "schemas._avro_native.Writer",
    .tp_doc = "A compiled Avro record writer: writer(record) -> framed bytes",
    .tp_basicsize = sizeof(Writer),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = Writer_new,
    .tp_dealloc = (destructor)Writer_dealloc,
    .tp_vectorcall_offset = offsetof(Writer, vectorcall),
    .tp_call = PyVectorcall_Call,
};

static PyTypeObject ReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "schemas._avro_native.Reader",
    .tp_doc = "A compiled Avro record reader: reader(framed_bytes) -> dict",
    .tp_basicsize = sizeof(Reader),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = Reader_new,
    .tp_dealloc = (destructor)Reader_dealloc,
    .tp_vectorcall_offset = offsetof(Reader, vectorcall),
    .tp_call = PyVectorcall_Call,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "schemas._avro_native",
    .m_doc = "Native writer and reader of segflow's flat Avro record schemas",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__avro_native(void) {
    PyDateTime_IMPORT;
    if (PyDateTimeAPI == NULL) return NULL;
    if (PyType_Ready(&ReaderType) < 0 || PyType_Ready(&WriterType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&ReaderType);
    if (PyModule_AddObject(m, "Reader", (PyObject *)&ReaderType) < 0) {
        Py_DECREF(&ReaderType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&WriterType);
    if (PyModule_AddObject(m, "Writer", (PyObject *)&WriterType) < 0) {
        Py_DECREF(&WriterType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

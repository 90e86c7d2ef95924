/* Batch Ed25519 verification of Tycoon envelopes with the GIL released once per batch.
 *
 * The signature check is libsodium's crypto_sign_open, the very function PyNaCl calls to
 * verify: its address is handed in by tycoon.bus.batch from PyNaCl's own cffi module,
 * so there is one libsodium in the process and nothing to link here. crypto_sign_open
 * takes signature ‖ message, so each envelope is copied into that order first.
 * Envelope layout: [0,3) magic+version, [3,35) sender key, payload, last 64 bytes the
 * signature over everything before it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef int (*sign_open_fn)(unsigned char *m, unsigned long long *mlen_p,
                            const unsigned char *sm, unsigned long long smlen,
                            const unsigned char *pk);

static sign_open_fn sign_open = NULL;

#define KEY_AT 3
#define HEADER 35
#define SIG 64

static PyObject *set_verifier(PyObject *self, PyObject *arg) {
    unsigned long long address = PyLong_AsUnsignedLongLong(arg);
    if (PyErr_Occurred()) return NULL;
    if (address == 0) {
        PyErr_SetString(PyExc_ValueError, "null verifier");
        return NULL;
    }
    sign_open = (sign_open_fn)(uintptr_t)address;
    Py_RETURN_NONE;
}

/* verify(envelopes: sequence of bytes) -> bytes: 1 where the signature verifies for the
 * key the envelope names, 0 otherwise (also for anything too short to be an envelope). */
static PyObject *verify(PyObject *self, PyObject *arg) {
    if (sign_open == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "set_verifier() was not called");
        return NULL;
    }
    PyObject *items = PySequence_Tuple(arg); /* holds every item alive meanwhile */
    if (items == NULL) return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(items);
    const unsigned char **data = malloc(sizeof(*data) * (size_t)(n ? n : 1));
    Py_ssize_t *size = malloc(sizeof(*size) * (size_t)(n ? n : 1));
    PyObject *result = PyBytes_FromStringAndSize(NULL, n);
    if (data == NULL || size == NULL || result == NULL) {
        free(data);
        free(size);
        Py_XDECREF(result);
        Py_DECREF(items);
        return PyErr_NoMemory();
    }
    Py_ssize_t longest = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyTuple_GET_ITEM(items, i);
        if (PyBytes_CheckExact(item)) {
            data[i] = (const unsigned char *)PyBytes_AS_STRING(item);
            size[i] = PyBytes_GET_SIZE(item);
            if (size[i] > longest) longest = size[i];
        } else {
            data[i] = NULL;
            size[i] = 0;
        }
    }
    /* scratch: signature ‖ message in, the opened message out */
    unsigned char *sm = malloc((size_t)longest + 1), *m = malloc((size_t)longest + 1);
    if (sm == NULL || m == NULL) {
        free(sm);
        free(m);
        free(data);
        free(size);
        Py_DECREF(result);
        Py_DECREF(items);
        return PyErr_NoMemory();
    }
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        const unsigned char *p = data[i];
        Py_ssize_t len = size[i];
        unsigned long long mlen = 0;
        out[i] = 0;
        if (p == NULL || len <= HEADER + SIG) continue;
        memcpy(sm, p + len - SIG, SIG);
        memcpy(sm + SIG, p, (size_t)(len - SIG));
        out[i] = sign_open(m, &mlen, sm, (unsigned long long)len, p + KEY_AT) == 0 ? 1 : 0;
    }
    Py_END_ALLOW_THREADS
    free(sm);
    free(m);
    free(data);
    free(size);
    Py_DECREF(items);
    return result;
}

static PyMethodDef methods[] = {
    {"set_verifier", set_verifier, METH_O, "Use the crypto_sign_verify_detached at this address."},
    {"verify", verify, METH_O, "Verify a batch of envelopes; one byte (1/0) per envelope."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_batchverify", "Batch Ed25519 checks of envelopes.", -1, methods,
};

PyMODINIT_FUNC PyInit__batchverify(void) { return PyModule_Create(&module); }

/* A C extension built stripped (-s) for the tests: its functions are static
 * and the binary keeps no symbol table, as in Debian's python3 where math
 * is built in. Targets must still be named after the Python function. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *twice(PyObject *self, PyObject *arg)
{
    (void)self;
    return PyNumber_Add(arg, arg);
}

static PyMethodDef methods[] = {
    {"twice", twice, METH_O, "arg + arg"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "fh_stripped", NULL, -1, methods};

PyMODINIT_FUNC PyInit_fh_stripped(void) { return PyModule_Create(&module); }

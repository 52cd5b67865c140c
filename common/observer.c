/* common/observer.c - the thread's task observer (see common/internal.h). */
#include "internal.h"

_Thread_local ckl__observer *ckl__tls_observer;

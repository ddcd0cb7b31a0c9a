// libmosquitto's public API, as Swift sees it. Nothing to wrap yet: the API has no variadic
// functions or function-like macros that the client needs.
#ifndef IOTHUB_SIDECAR_CMOSQUITTO_SHIM_H
#define IOTHUB_SIDECAR_CMOSQUITTO_SHIM_H
#include <mosquitto.h>
#endif

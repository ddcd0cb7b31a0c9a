// glibc's allocator controls (mallopt), for the sidecar's memory policy.
#include <malloc.h>
